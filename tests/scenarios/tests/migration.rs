//! Instances leaving a board and arriving on another: `save` to the host, `restore` on a fresh
//! board from the saved checkpoint, and refusals of broken checkpoints.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use scenarios::{Log, board_with_image};
use xtask::build;
use xtask::bundle::{BundleSpec, write_bundle_file};
use xtask::checkpoint;
use xtask::qemu::{stream_link, user_link};

/// Rounds of the pattern guest: enough to be saved while it runs and go on afterwards.
const PATTERN_ROUNDS: u32 = 200;

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

/// The pattern test guest as a 32 MiB instance that keeps writing and checking its memory.
fn pattern_bundle(stem: &str, vcpus: u32) -> PathBuf {
    let bundle = temp(&format!("{stem}-pattern-{vcpus}.fit"));
    write_bundle_file(
        &BundleSpec {
            kernel: build::guest_image("pattern"),
            initrd: None,
            name: "pattern".into(),
            memory: 32 << 20,
            vcpus,
            bootargs: format!("pattern.rounds={PATTERN_ROUNDS} pattern.seconds=1000"),
        },
        &bundle,
    )
    .expect("pattern bundle");
    bundle
}

/// A board with no instance of its own, waiting for one on its link; the host reaches it at
/// `port`.
fn listening_board(port: u16) -> xtask::qemu::Board {
    let empty = temp("empty.img");
    std::fs::write(&empty, b"").expect("empty initrd");
    let mut board = board_with_image(empty, "listener");
    board.bootargs = "log=info net.listen".into();
    board.cpus = 2;
    board.extra_args = user_link(None, Some(port));
    board
}

/// The round numbers the pattern guest reported intact, in order.
fn rounds(serial: &str) -> Vec<u32> {
    serial
        .lines()
        .filter_map(|line| line.split("pattern: round ").nth(1))
        .filter(|rest| rest.contains(" ok "))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect()
}

/// Sends `file` to a board listening at `port` from a thread, so that the board's run can be
/// watched meanwhile; the thread's result is the board's answer.
fn send_in_background(file: &Path, port: u16) -> std::thread::JoinHandle<Result<String, String>> {
    let bytes = std::fs::read(file).expect("checkpoint file");
    std::thread::spawn(move || checkpoint::send(&bytes, port, Duration::from_secs(60)))
}

#[test]
fn a_saved_instance_restored_on_a_fresh_board_continues_with_its_memory_intact() {
    let saved = temp("pattern.ckpt");
    let _ = std::fs::remove_file(&saved);
    let listener = TcpListener::bind("127.0.0.1:0").expect("receiver port");
    let save_port = listener.local_addr().unwrap().port();
    let receiver = {
        let saved = saved.clone();
        std::thread::spawn(move || checkpoint::receive(&listener, &saved, Duration::from_secs(120)))
    };

    // Board A: the guest runs a few rounds, is saved while it runs, and runs on.
    let bundle = pattern_bundle("save", 2);
    let mut a = board_with_image(bundle.clone(), "pattern");
    a.bootargs = "log=info".into();
    a.cpus = 2;
    a.extra_args = user_link(Some(save_port), None);
    let a_log = Log::boot_scripted("save", &a, &[("pattern: round 3 ok", "save pattern\r")]);
    a_log
        .has("pattern: saving to 10.0.2.100:7071")
        .has("pattern: saved to 10.0.2.100:7071")
        .has("PASS: pattern rounds")
        .lacks("FAIL");
    let summary = receiver
        .join()
        .expect("receiver thread")
        .unwrap_or_else(|why| panic!("the host's receiver: {why}"));
    assert_eq!(summary.name, "pattern");
    let saved_at = rounds(a_log.serial())
        .into_iter()
        .filter(|round| *round >= 3)
        .min()
        .expect("rounds before the save");

    // Board B: fresh, no instance; the checkpoint arrives and the guest continues from it.
    let port = free_port();
    let b = listening_board(port);
    let sender = send_in_background(&saved, port);
    let b_log = Log::boot_scripted("restore", &b, &[]);
    let answer = sender.join().expect("sender thread");
    b_log
        .has("listening on 10.0.2.15:7070")
        .has("pattern: received")
        .has("PASS: pattern rounds")
        .lacks("FAIL")
        .powered_off();
    assert_eq!(answer.as_deref(), Ok("OK"), "{}", b_log.serial());
    let restored = rounds(b_log.serial());
    b_log.check(
        restored.first().is_some_and(|first| *first >= saved_at)
            && restored.windows(2).all(|pair| pair[1] == pair[0] + 1)
            && restored.last() == Some(&(PATTERN_ROUNDS - 1)),
        "the restored guest continues its rounds where it was saved, each one checked intact",
    );
    let _ = std::fs::remove_file(&saved);
    let _ = std::fs::remove_file(&bundle);
}

#[test]
fn an_instance_migrates_to_another_board_while_it_runs_and_arrives_intact() {
    let socket = temp("link.sock");
    let _ = std::fs::remove_file(&socket);
    let bundle = pattern_bundle("migrate", 2);

    // Board B: no instance of its own; it waits on the link and powers off once the instance
    // that arrives has finished.
    let empty = temp("empty-b.img");
    std::fs::write(&empty, b"").expect("empty initrd");
    let mut b = board_with_image(empty.clone(), "b");
    b.bootargs = "log=info net.addr=10.0.0.2/24 net.listen".into();
    b.cpus = 2;
    b.extra_args = stream_link(&socket, true);
    let b_run = std::thread::spawn(move || Log::boot_scripted("board B", &b, &[]));
    std::thread::sleep(Duration::from_secs(1));

    // Board A: the guest runs a few rounds and moves to B while it runs.
    let mut a = board_with_image(bundle.clone(), "pattern");
    a.bootargs = "log=info net.addr=10.0.0.1/24".into();
    a.cpus = 2;
    a.extra_args = stream_link(&socket, false);
    let a_log = Log::boot_scripted(
        "board A",
        &a,
        &[
            ("pattern: round 3 ok", "migrate pattern 10.0.0.2\r"),
            ("pattern: migrated to", "poweroff\r"),
        ],
    );
    let b_log = b_run.join().expect("board B");
    a_log
        .has("pattern: migrating to 10.0.0.2:7070")
        .has("pattern: migrated to 10.0.0.2:7070")
        .has("pattern: stopped: moved to 10.0.0.2:7070")
        .lacks("PASS: pattern rounds")
        .lacks("FAIL");
    b_log
        .has("listening on 10.0.0.2:7070")
        .has("pattern: received")
        .has("PASS: pattern rounds")
        .lacks("FAIL")
        .powered_off();
    let (on_a, on_b) = (rounds(a_log.serial()), rounds(b_log.serial()));
    b_log.check(
        on_a.last()
            .zip(on_b.first())
            .is_some_and(|(a, b)| *b == a + 1)
            && on_b.windows(2).all(|pair| pair[1] == pair[0] + 1)
            && on_b.last() == Some(&(PATTERN_ROUNDS - 1)),
        "the guest's rounds continue on B from where they stopped on A, each one checked intact",
    );
    let _ = std::fs::remove_file(&bundle);
    let _ = std::fs::remove_file(&empty);
    let _ = std::fs::remove_file(&socket);
}
