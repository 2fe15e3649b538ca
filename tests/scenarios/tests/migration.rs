//! Instances leaving a board and arriving on another: `save` to the host, `restore` on a fresh
//! board from the saved checkpoint, and refusals of broken checkpoints.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use scenarios::{Log, board_with_image, board_with_instances, instance, listening_board};
use xtask::build;
use xtask::bundle::{BundleSpec, write_bundle_file};
use xtask::checkpoint;
use xtask::linux_guest;
use xtask::qemu::{Board, stream_link, user_link};
use xtask::relay::{Cut, Impairments, Relay};

/// How long each board of a move may run: two boards share the host's CPUs with the other
/// scenarios, and every move copies the guest's whole memory at least once.
const BOARD_TIMEOUT: Duration = Duration::from_secs(180);
/// Rounds of the pattern guest: enough to be saved while it runs and go on afterwards.
const PATTERN_ROUNDS: u32 = 200;
/// Rounds of the pattern guest that moves there and back: it must still run after two moves
/// of 32 MiB copied twice each, on a host busy with the other scenarios.
const ROUND_TRIP_ROUNDS: u32 = 800;

/// A file in the temporary directory, unique to this test process and `stem`.
fn temp(stem: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{stem}-{}", std::process::id()))
}

/// A free port on the host's loopback (free when asked; the OS does not hand it out again soon).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// The pattern test guest as a 32 MiB instance that keeps writing and checking its memory for
/// `rounds` rounds, with `more` bootargs.
fn pattern_bundle(stem: &str, vcpus: u32, rounds: u32, more: &str) -> PathBuf {
    let bundle = temp(&format!("{stem}-pattern-{vcpus}.fit"));
    write_bundle_file(
        &BundleSpec {
            kernel: build::guest_image("pattern"),
            initrd: None,
            name: "pattern".into(),
            memory: 32 << 20,
            vcpus,
            bootargs: format!(
                "pattern.rounds={rounds} pattern.seconds=1000 pattern.notices=1 {more}"
            ),
        },
        &bundle,
    )
    .expect("pattern bundle");
    bundle
}

/// Board A of a move: the pattern guest (2 vCPUs) for `rounds` rounds, and its bundle (delete
/// it when done).
fn pattern_board(stem: &str, rounds: u32) -> (Board, PathBuf) {
    let bundle = pattern_bundle(stem, 2, rounds, "");
    let mut board = board_with_image(bundle.clone(), "pattern");
    board.bootargs = "log=info".into();
    board.cpus = 2;
    (board, bundle)
}

/// Boards `a` (10.0.0.1) and B (10.0.0.2, no instance of its own) joined through a relay that
/// does `impairments` to their frames, both listening for instances. Each board's console gets
/// its script typed. Both boards' logs, and the relay for its counters.
fn linked_boards(
    stem: &str,
    impairments: Impairments,
    mut a: Board,
    a_script: &[(&str, &str)],
    b_script: &'static [(&'static str, &'static str)],
) -> (Log, Log, Relay) {
    let (to_a, to_b) = (
        temp(&format!("{stem}-a.sock")),
        temp(&format!("{stem}-b.sock")),
    );
    let relay = Relay::start(&to_a, &to_b, impairments).expect("relay");
    let b = listening_board("net.addr=10.0.0.2/24", stream_link(&to_b, false));
    let b_run = std::thread::spawn(move || {
        Log::boot_scripted_within("board B", &b, b_script, BOARD_TIMEOUT)
    });
    a.bootargs.push_str(" net.addr=10.0.0.1/24 net.listen");
    a.extra_args.extend(stream_link(&to_a, false));
    let a_log = Log::boot_scripted_within("board A", &a, a_script, BOARD_TIMEOUT);
    let b_log = b_run.join().expect("board B");
    for path in [&to_a, &to_b] {
        let _ = std::fs::remove_file(path);
    }
    let a_log = a_log.with_peer(&b_log);
    let b_log = b_log.with_peer(&a_log);
    (a_log, b_log, relay)
}

/// The round numbers that the pattern guest's CPU `cpu` reported intact, in order.
fn rounds(serial: &str, cpu: usize) -> Vec<u32> {
    let marker = if cpu == 0 {
        "pattern: round ".to_string()
    } else {
        format!("pattern: cpu {cpu} round ")
    };
    serial
        .lines()
        .filter_map(|line| line.split(marker.as_str()).nth(1))
        .filter(|rest| rest.contains(" ok "))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect()
}

/// True if each leg has rounds and together they count up by one from the first.
fn continues(legs: &[&[u32]]) -> bool {
    let all: Vec<u32> = legs.concat();
    legs.iter().all(|leg| !leg.is_empty()) && all.windows(2).all(|pair| pair[1] == pair[0] + 1)
}

/// `serial` split where the line containing `marker` starts (all of it before if none does).
fn split_at<'a>(serial: &'a str, marker: &str) -> (&'a str, &'a str) {
    let at = serial.find(marker).unwrap_or(serial.len());
    let at = serial[..at].rfind('\n').map_or(0, |newline| newline + 1);
    serial.split_at(at)
}

/// The pause each `resumed after <ms> ms` notice in `serial` reported, in milliseconds.
fn pauses(serial: &str) -> Vec<u64> {
    serial
        .split("resumed after ")
        .skip(1)
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect()
}

/// Sends each of `streams` in turn to a board listening at `port`, from a thread so that the
/// board's run can be watched meanwhile; the thread's result is the board's answer to each.
fn send_in_background(
    streams: Vec<Vec<u8>>,
    port: u16,
) -> std::thread::JoinHandle<Vec<Result<String, String>>> {
    std::thread::spawn(move || {
        streams
            .iter()
            .map(|bytes| checkpoint::send(bytes, port, Duration::from_secs(60)))
            .collect()
    })
}

#[test]
fn a_saved_instance_restored_on_a_fresh_board_continues_with_its_memory_intact() {
    // The guest's own request (HV_CHECKPOINT), then `save` on the shell: two checkpoints.
    let (asked, saved) = (temp("asked.ckpt"), temp("pattern.ckpt"));
    let listener = TcpListener::bind("127.0.0.1:0").expect("receiver port");
    let save_port = listener.local_addr().unwrap().port();
    let receiver = {
        let (asked, saved) = (asked.clone(), saved.clone());
        std::thread::spawn(move || {
            [asked, saved].map(|file| {
                let _ = std::fs::remove_file(&file);
                checkpoint::receive(&listener, &file, Duration::from_secs(120))
                    .unwrap_or_else(|why| panic!("the host's receiver: {why}"))
            })
        })
    };

    // Board A: the guest runs a few rounds, asks for its checkpoint after round 2, then is
    // saved from the shell while it runs, and runs on.
    let bundle = pattern_bundle("save", 2, PATTERN_ROUNDS, "pattern.checkpoint_at=2");
    let mut a = board_with_image(bundle.clone(), "pattern");
    a.bootargs = "log=info".into();
    a.cpus = 2;
    a.extra_args = user_link(Some(save_port), None);
    let a_log = Log::boot_scripted_within(
        "save",
        &a,
        &[("pattern: saved to", "save pattern\r")],
        BOARD_TIMEOUT,
    );
    a_log
        .in_order(
            "pattern: asks for its checkpoint",
            "pattern: asked for a checkpoint after round 2: 0",
        )
        .in_order("pattern: asks for its checkpoint", "save pattern")
        .has("pattern: saving to 10.0.2.100:7071")
        .has("PASS: pattern rounds")
        .lacks("FAIL");
    a_log.check(
        a_log.count("pattern: saved to 10.0.2.100:7071") == 2,
        "both checkpoints were taken",
    );
    let summaries = receiver.join().expect("receiver thread");
    assert!(summaries.iter().all(|summary| summary.name == "pattern"));
    let (_, typed) = split_at(a_log.serial(), "save pattern");
    let saved_at = rounds(typed, 0)
        .first()
        .copied()
        .expect("rounds after `save`");

    // Board B: fresh, no instance. First a copy with one byte flipped in the middle of a memory
    // section arrives and is refused, then the checkpoint itself, and the guest continues.
    let good = std::fs::read(&saved).expect("checkpoint file");
    let mut corrupted = good.clone();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0x40;
    let port = free_port();
    let b = listening_board("", user_link(None, Some(port)));
    let sender = send_in_background(vec![corrupted, good], port);
    let b_log = Log::boot_scripted_within("restore", &b, &[], BOARD_TIMEOUT);
    let answers = sender.join().expect("sender thread");
    b_log
        .has("listening on 10.0.2.15:7070")
        .has("incoming instance refused: checkpoint section 2 (memory): checksum mismatch; nothing started")
        .in_order("incoming instance refused", "pattern: received")
        .has("PASS: pattern rounds")
        .lacks("FAIL")
        .powered_off();
    b_log.check(
        b_log.count("pattern: received") == 1,
        "one instance arrives: nothing started from the corrupted copy",
    );
    assert!(
        matches!(&answers[0], Err(why) if why.contains("refused") && why.contains("checksum")),
        "the sender hears why: {:?}",
        answers[0]
    );
    assert_eq!(answers[1].as_deref(), Ok("OK"), "{}", b_log.serial());
    let restored = rounds(b_log.serial(), 0);
    b_log.check(
        restored.first().is_some_and(|first| *first >= saved_at)
            && restored.windows(2).all(|pair| pair[1] == pair[0] + 1)
            && restored.last() == Some(&(PATTERN_ROUNDS - 1)),
        "the restored guest continues its rounds where it was saved, each one checked intact",
    );
    b_log.check(
        continues(&[&rounds(b_log.serial(), 1)]),
        "its second CPU continues its rounds too",
    );
    for file in [&asked, &saved, &bundle] {
        let _ = std::fs::remove_file(file);
    }
}

#[test]
fn an_instance_migrates_to_another_board_and_back_while_it_runs_and_arrives_intact() {
    // The boards' link drops and corrupts a few frames (inside IPv4 packets, where the IP and
    // TCP checksums must catch it): TCP absorbs both. A moves its guest to B while it runs; once
    // both of its CPUs have run rounds on B, B moves it back, and it finishes on A.
    let (a, bundle) = pattern_board("migrate", ROUND_TRIP_ROUNDS);
    let (a_log, b_log, relay) = linked_boards(
        "migrate",
        Impairments {
            drop_per_mille: 2,
            corrupt_per_mille: 2,
            ..Impairments::default()
        },
        a,
        &[("pattern: round 3 ok", "migrate pattern 10.0.0.2\r")],
        &[
            ("notice 2: resumed after", ""),
            ("pattern: cpu 1 round", ""),
            ("pattern: round", "migrate pattern 10.0.0.1\r"),
            ("pattern: migrated to", "poweroff\r"),
        ],
    );
    let _ = std::fs::remove_file(&bundle);
    a_log
        .has("pattern: migrating to 10.0.0.2:7070")
        .in_order(
            "pattern: stopped: moved to 10.0.0.2:7070",
            "pattern: received",
        )
        // (The guest's first line back may come before the hypervisor's line that started it.)
        .in_order(
            "pattern: stopped: moved to 10.0.0.2:7070",
            "pattern: migration notice 4: resumed after",
        )
        .has("PASS: pattern rounds")
        .has("PASS: pattern counter")
        .lacks("FAIL")
        .powered_off();
    b_log
        .in_order(
            "listening on 10.0.0.2:7070",
            "pattern: migration notice 2: resumed after",
        )
        .has("pattern: received")
        .has("pattern: stopped: moved to 10.0.0.1:7070")
        .lacks("PASS: pattern rounds")
        .lacks("FAIL")
        .powered_off();
    // It was told of each pause: the line is on the board it left, or on the one it arrived
    // at if the pause caught it half-printed (the half-written line moves with it).
    for notice in ["notice 1: pausing", "notice 3: pausing"] {
        a_log.check(
            a_log.count(notice) + b_log.count(notice) == 1,
            &format!("one \"{notice}\" line on the two boards"),
        );
    }
    // The pauses it was told of are plausible: more than nothing, well under the scenario's.
    let told = [pauses(b_log.serial()), pauses(a_log.serial())].concat();
    b_log.check(
        told.len() == 2 && told.iter().all(|ms| *ms < 30_000),
        &format!("a resumed notice on each arrival says how long it was paused: {told:?}"),
    );
    // Every round of both CPUs read back intact (a FAIL line otherwise), and they continue
    // from board to board: A, then B, then A again.
    let (a_before, a_after) = split_at(a_log.serial(), "pattern: stopped: moved to");
    for cpu in [0, 1] {
        let legs = [
            rounds(a_before, cpu),
            rounds(b_log.serial(), cpu),
            rounds(a_after, cpu),
        ];
        a_log.check(
            continues(&[&legs[0], &legs[1], &legs[2]]),
            &format!("CPU {cpu}'s rounds continue on B from A, then on A from B: {legs:?}"),
        );
    }
    a_log.check(
        rounds(a_after, 0).last() == Some(&(ROUND_TRIP_ROUNDS - 1)),
        "the guest finishes its rounds on A",
    );
    assert!(
        relay.stats.dropped.load(Ordering::Relaxed) > 0
            && relay.stats.corrupted.load(Ordering::Relaxed) > 0,
        "frames were dropped and corrupted on the way, and TCP absorbed it"
    );
}

#[test]
fn link_cuts_in_the_first_round_and_in_the_final_copy_keep_the_instance_running_until_an_attempt_gets_through()
 {
    // Long enough for two failed attempts, the third and the rest on B.
    const ROUNDS: u32 = 900;
    // After 4 MB towards B (inside the first round of 32 MiB) the link goes dark for 15 s; then,
    // 40 MB into the second attempt (past its first round, inside the final copy), again.
    let cut = |after| Cut {
        after,
        lasting: Duration::from_secs(15),
    };
    let (a, bundle) = pattern_board("cut", ROUNDS);
    let (a_log, b_log, relay) = linked_boards(
        "cut",
        Impairments {
            cuts: vec![cut(4 << 20), cut(40 << 20)],
            ..Impairments::default()
        },
        a,
        &[
            ("pattern: round 3 ok", "migrate pattern 10.0.0.2\r"),
            ("failed in round 1:", "migrate pattern 10.0.0.2\r"),
            ("failed in the final copy:", "migrate pattern 10.0.0.2\r"),
            ("pattern: migrated to", "poweroff\r"),
        ],
        &[],
    );
    let _ = std::fs::remove_file(&bundle);
    b_log
        .check(
            b_log.count(
                "incoming instance refused: the stream broke off before its end; nothing started",
            ) == 2,
            "B refuses both broken streams",
        )
        .in_order("nothing started", "pattern: received")
        .has("PASS: pattern rounds")
        .has("PASS: pattern counter")
        .lacks("FAIL")
        .powered_off();
    let failure = |when: &str| {
        format!(
            "pattern: migration to 10.0.0.2:7070 failed {when}: the connection closed or timed out; it keeps running here"
        )
    };
    a_log
        .in_order(&failure("in round 1"), &failure("in the final copy"))
        .in_order(
            &failure("in the final copy"),
            "pattern: migrated to 10.0.0.2:7070",
        )
        // Paused for the final copy, told so, and told it resumed when that failed (the guest's
        // lines and the hypervisor's come from different CPUs: their order is not fixed).
        .in_order(
            "pattern: migration notice 1: pausing",
            "pattern: migration notice 2: resumed after",
        )
        .lacks("FAIL");
    // The guest ran on at A after each failed attempt, and its rounds continue on B.
    let (_, after_first) = split_at(a_log.serial(), &failure("in round 1"));
    let (between, after_second) = split_at(after_first, &failure("in the final copy"));
    let on_b = rounds(b_log.serial(), 0);
    for cpu in [0, 1] {
        let legs = [
            rounds(between, cpu),
            rounds(after_second, cpu),
            rounds(b_log.serial(), cpu),
        ];
        a_log.check(
            continues(&[&legs[0], &legs[1], &legs[2]]),
            &format!("CPU {cpu} ran rounds on A after each failure, continued on B: {legs:?}"),
        );
    }
    b_log.check(
        on_b.last() == Some(&(ROUNDS - 1)),
        "the guest finishes its rounds on B",
    );
    assert_eq!(relay.stats.cuts.load(Ordering::Relaxed), 2);
}

/// The guest's workload for the Linux move, one shell line: every second a 4 MiB file of
/// random bytes in a tmpfs is checked against the checksum taken when it was written, then
/// rewritten with a new checksum, and `tick <n> <date +%s>` printed; it stops (after a whole
/// iteration) once `/tmp/stop` exists. The markers are split in quotes so that the echo of the
/// typed line cannot be taken for them.
const LINUX_WORKLOAD: &str = "mount -t tmpfs tmpfs /tmp && (i=0; while [ ! -e /tmp/stop ]; do \
    i=$((i+1)); if [ -e /tmp/f.sum ] && ! sha256sum -c -s /tmp/f.sum; then echo \"FILE\"\"-BAD $i\"; fi; \
    dd if=/dev/urandom of=/tmp/f bs=64k count=64 2>/dev/null; sha256sum /tmp/f > /tmp/f.sum; \
    echo \"tick $i $(date +%s)\"; sleep 1; done; echo \"LOOP\"\"-STOPPED\") &\r";

/// The workload's ticks in `serial`: (n, the guest's date in seconds), in order.
fn ticks(serial: &str) -> Vec<(u64, u64)> {
    serial
        .lines()
        .filter_map(|line| {
            let mut fields = line.split("tick ").nth(1)?.split_whitespace();
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn a_linux_instance_migrates_while_it_works_and_its_neighbour_runs_on() {
    let kernel = linux_guest::kernel_image();
    let initramfs = linux_guest::initramfs_image();
    for path in [&kernel, &initramfs] {
        assert!(
            path.exists(),
            "{} is missing: run the scenarios with `cargo xtask test`",
            path.display()
        );
    }
    // A: the Linux instance (2 vCPUs) and a neighbour that keeps checking its memory.
    let mut neighbour = instance("pattern", build::guest_image("pattern"), None, 32, 1, true);
    neighbour.spec.bootargs = "pattern.rounds=100000 pattern.seconds=100000".into();
    let (mut a, bundle) = board_with_instances(
        "linux-move",
        &[
            instance("linux", kernel, Some(initramfs), 256, 2, true),
            neighbour,
        ],
        2,
    );
    a.memory_mib = 1024;
    let (a_log, b_log, _) = linked_boards(
        "linux-move",
        Impairments::default(),
        a,
        &[
            // The keyboard to Linux, the workload started, then back to the shell to move it.
            (linux_guest::INIT_MARKER, "\x1d"),
            ("keyboard to linux", LINUX_WORKLOAD),
            ("tick 3 ", "\x1c"),
            ("keyboard to the shell", "migrate linux 10.0.0.2\r"),
            // The neighbour runs on once Linux has left.
            ("linux: migrated to", ""),
            ("[pattern] pattern: round", ""),
            ("[pattern] pattern: round", "poweroff\r"),
        ],
        &[
            // Linux arrives and ticks on; then on its console: stop the workload, check the
            // file, ask the date, power off.
            ("linux: received", ""),
            ("] tick ", ""),
            ("] tick ", "\x1d"),
            ("keyboard to linux", "touch /tmp/stop\r"),
            (
                "LOOP-STOPPED",
                "sha256sum -c /tmp/f.sum && echo FILE-OK-$((40+2))\r",
            ),
            ("FILE-OK-42", "echo DATE-$(date +%s)\r"),
            ("\nDATE-", "poweroff -f\r"),
        ],
    );
    let _ = std::fs::remove_file(&bundle);
    a_log
        .has("linux: migrating to 10.0.0.2:7070")
        .in_order(
            "linux: migrated to 10.0.0.2:7070",
            "linux: stopped: moved to",
        )
        .lacks("FILE-BAD")
        .lacks("[pattern] FAIL")
        .lacks("PANIC")
        .powered_off();
    b_log
        .has("linux: received")
        .in_order("LOOP-STOPPED", "FILE-OK-42")
        .in_order("FILE-OK-42", "linux: stopped: the guest called SYSTEM_OFF")
        .lacks(linux_guest::INIT_MARKER)
        .lacks("FILE-BAD")
        .lacks("PANIC")
        .powered_off();
    // The neighbour kept running on A while Linux left, its memory intact.
    let (_, after_move) = split_at(a_log.serial(), "linux: migrated to");
    a_log.check(
        after_move.matches("[pattern] pattern: round").count() >= 2,
        "the neighbour ran rounds after Linux left",
    );
    // The ticks continue on B without a restart, and the guest's clock never went back.
    let (on_a, on_b) = (ticks(a_log.serial()), ticks(b_log.serial()));
    let numbers: Vec<u32> = on_a.iter().chain(&on_b).map(|(n, _)| *n as u32).collect();
    let (a_ticks, b_ticks) = numbers.split_at(on_a.len());
    b_log.check(
        continues(&[a_ticks, b_ticks]),
        &format!("the guest's ticks continue on B from A: {on_a:?} then {on_b:?}"),
    );
    let date: Option<u64> = b_log
        .serial()
        .split("\nDATE-")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok());
    let dates: Vec<u64> = on_a.iter().chain(&on_b).map(|(_, date)| *date).collect();
    b_log.check(
        date.is_some_and(|date| dates.iter().all(|tick| *tick <= date))
            && dates.windows(2).all(|pair| pair[0] <= pair[1]),
        &format!("the guest's date never went back: ticks at {dates:?}, then {date:?}"),
    );
}
