//! Several instances on one board: started from one board bundle, sharing the CPUs fairly,
//! isolated from a hostile neighbour, managed from the board console's shell and its JSON port.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use scenarios::{Log, board_with_instances, instance};
use xtask::build;
use xtask::linux_guest::{self, PROMPT};

/// Keys of the board console.
const NEXT_INSTANCE: &str = "\x1d";

fn guest(name: &str) -> PathBuf {
    build::guest_image(name)
}

fn linux(name: &str, vcpus: u32, start: bool) -> xtask::bundle::InstanceSpec {
    instance(
        name,
        linux_guest::kernel_image(),
        Some(linux_guest::initramfs_image()),
        256,
        vcpus,
        start,
    )
}

/// The numbers after `key` in the JSON objects of the JSON lines of `serial` that answer
/// `command`.
fn json_replies(serial: &str, command: &str) -> Vec<serde_json::Value> {
    serial
        .lines()
        .filter_map(|line| line.find('{').map(|at| &line[at..]))
        .filter_map(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .filter(|reply| reply["command"] == command)
        .collect()
}

/// The `spin: total N` count that instance `name` printed.
fn spin_total(serial: &str, name: &str) -> u64 {
    let prefix = format!("[{name}] spin: total ");
    serial
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no `spin: total` line from {name}:\n{serial}"))
}

#[test]
fn two_linux_instances_and_a_test_guest_run_at_once_from_one_bundle() {
    let (mut board, bundle) = board_with_instances(
        "three-instances",
        &[
            linux("web", 2, true),
            linux("db", 2, true),
            instance("basic", guest("basic"), None, 64, 1, true),
        ],
        4,
    );
    // The JSON port: QEMU virt's second UART on a socket the test connects to.
    let socket = std::env::temp_dir().join(format!("instances-json-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    board.extra_args.extend([
        "-chardev".into(),
        format!(
            "socket,id=json,path={},server=on,wait=off",
            socket.display()
        ),
        "-serial".into(),
        "chardev:json".into(),
    ]);
    let socket_path = socket.clone();
    let json = std::thread::spawn(move || -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let stream = loop {
            match UnixStream::connect(&socket_path) {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(error) => return Err(format!("JSON port: {error}")),
            }
        };
        // Ask until the hypervisor answers (it may not have set the port up yet).
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(|error| error.to_string())?;
        let mut reader = BufReader::new(&stream);
        loop {
            (&stream)
                .write_all(b"list\n")
                .map_err(|error| error.to_string())?;
            let mut line = String::new();
            match reader.read_line(&mut line) {
                // A line sent before the port was up may arrive cut short: ask again.
                Ok(n) if n > 0 && line.contains("\"ok\":true") => return Ok(line),
                _ if Instant::now() < deadline => {}
                _ => return Err("the JSON port never answered".into()),
            }
        }
    });
    let log = Log::boot_scripted_within(
        "three instances",
        &board,
        &[
            // Both shells are up (each prints its prompt once) ...
            (PROMPT, ""),
            (PROMPT, "json list\r"),
            // ... then the keyboard goes to web, then to db.
            ("\"command\":\"list\"", NEXT_INSTANCE),
            ("keyboard to web", "echo WEB=$((20+1))\r"),
            ("WEB=21", NEXT_INSTANCE),
            ("keyboard to db", "echo DB=$((30+2))\r"),
            ("DB=32", "poweroff -f\r"),
            ("db: stopped", NEXT_INSTANCE),
            ("keyboard to web", "poweroff -f\r"),
        ],
        Duration::from_secs(240),
    );
    std::fs::remove_file(&bundle).ok();
    std::fs::remove_file(&socket).ok();
    log.powered_off()
        .has("[basic] RESULT: PASS")
        .has("[web] GUEST-INIT: up")
        .has("[db] GUEST-INIT: up")
        .has("WEB=21")
        .has("DB=32")
        .in_order("keyboard to web", "WEB=21")
        .in_order("keyboard to db", "DB=32")
        .has("web: stopped: the guest called SYSTEM_OFF")
        .lacks("PANIC");
    let lists = json_replies(log.serial(), "list");
    let names: Vec<&str> = lists[0]["instances"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|row| row["name"].as_str()).collect())
        .unwrap_or_default();
    log.check(
        names.contains(&"web") && names.contains(&"db"),
        &format!("`json list` names web and db: {:?}", lists[0]),
    );
    let port = json.join().expect("the JSON port thread");
    let port: serde_json::Value = port
        .as_deref()
        .map_err(String::clone)
        .and_then(|line| serde_json::from_str(line).map_err(|e| format!("{e}: {line:?}")))
        .unwrap_or_else(|error| panic!("the JSON port answered no JSON list: {error}"));
    log.check(
        port["ok"] == true && port["command"] == "list",
        &format!("the JSON port's answer: {port}"),
    );
}

#[test]
fn six_vcpus_on_two_cpus_share_them_fairly_and_an_idle_instance_costs_nothing() {
    let (board, bundle) = board_with_instances(
        "fairness",
        &[
            instance("spina", guest("spin"), None, 32, 2, true),
            instance("spinb", guest("spin"), None, 32, 2, true),
            instance("idle", guest("idle"), None, 32, 2, true),
        ],
        2,
    );
    // Not under icount: there the board's CPUs take turns on one host thread and the counter
    // counts the instructions of whichever runs, so a guest's count per tick depends on whether
    // the other CPU was idle at the time, not only on the share the scheduler gave it.
    let log = Log::boot("fairness", &board);
    std::fs::remove_file(&bundle).ok();
    log.powered_off()
        .has("[spina] PASS: spin counted")
        .has("[spinb] PASS: spin counted")
        .has("[idle] PASS: idle woke by its timer")
        .lacks("PANIC");
    let (a, b) = (
        spin_total(log.serial(), "spina"),
        spin_total(log.serial(), "spinb"),
    );
    let ratio = a as f64 / b as f64;
    log.check(
        (0.8..=1.25).contains(&ratio),
        &format!("spin counts {a} and {b}: ratio {ratio:.3} outside 0.8..1.25"),
    );
    // The hypervisor's record of the CPU time the idle instance took, when it stopped.
    let idle_ms = log
        .serial()
        .lines()
        .find_map(|line| {
            line.split_once("idle: stopped: ")?
                .1
                .split_once("(it ran ")?
                .1
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no CPU time for idle:\n{}", log.serial()));
    // The spinning instances ran for 2 s of guest time each while idle waited: under 5% of that.
    log.check(
        idle_ms < 100,
        &format!("the idle instance ran {idle_ms} ms, over 5% of the 2 s the others spun"),
    );
}

#[test]
fn linux_with_four_vcpus_boots_and_runs_on_two_cpus() {
    let (board, bundle) = board_with_instances("linux-4-on-2", &[linux("linux", 4, true)], 2);
    let log = Log::boot_scripted_within(
        "linux 4 vCPUs on 2 CPUs",
        &board,
        &[
            (PROMPT, NEXT_INSTANCE),
            ("keyboard to linux", "echo CPUS=$(nproc)\r"),
            ("CPUS=4", "poweroff -f\r"),
        ],
        Duration::from_secs(180),
    );
    std::fs::remove_file(&bundle).ok();
    log.powered_off()
        .has("GUEST-INIT: cpus 4")
        .has("CPUS=4")
        .has("linux: stopped: the guest called SYSTEM_OFF")
        .lacks("PANIC");
}

#[test]
fn a_hostile_instance_cannot_reach_or_drown_its_neighbour() {
    let (board, bundle) = board_with_instances(
        "isolation",
        &[
            instance("pattern", guest("pattern"), None, 64, 1, true),
            instance("intruder", guest("intruder"), None, 32, 1, true),
        ],
        2,
    );
    let log = Log::boot_scripted_within("isolation", &board, &[], Duration::from_secs(120));
    std::fs::remove_file(&bundle).ok();
    log.powered_off()
        .has("[pattern] PASS: pattern rounds")
        .has("[pattern] RESULT: PASS")
        .has("[intruder] PASS: aborts injected")
        .has("[intruder] PASS: unknown hvcs refused")
        .has("intruder: read of unmapped IPA")
        .has("lines about this instance suppressed before this one")
        .has("console lines suppressed")
        .lacks("[pattern] FAIL")
        .lacks("PANIC");
    // The neighbour's output kept flowing while the intruder flooded.
    let serial = log.serial();
    // From its first flood line (the iteration lines after each flood mostly drown in it).
    let first_flood = serial
        .find("[intruder] intruder: flood line")
        .unwrap_or(usize::MAX);
    // Most of the intruder's own lines are dropped by its console budget: its flood lasts until
    // the hypervisor records its end.
    let last_flood = serial.find("intruder: stopped:").unwrap_or(0);
    let rounds_during = serial
        .match_indices("[pattern] pattern: round")
        .filter(|(at, _)| (first_flood..last_flood).contains(at))
        .count();
    log.check(
        rounds_during >= 2,
        &format!("only {rounds_during} pattern rounds printed while the intruder flooded"),
    );
}

#[test]
fn destroy_and_start_twenty_times_returns_the_same_memory_and_restart_boots_again() {
    const CYCLES: usize = 20;
    let (board, bundle) = board_with_instances(
        "lifecycle",
        &[
            linux("linux", 1, true),
            instance("victim", guest("idle"), None, 64, 1, false),
        ],
        2,
    );
    let mut script: Vec<(&str, &str)> = vec![(PROMPT, "json free\r")];
    for _ in 0..CYCLES {
        script.push(("\"command\":\"free\"", "start victim\r"));
        script.push(("victim started", "destroy victim\r"));
        script.push(("victim: stopped: destroyed", "json free\r"));
    }
    script.push(("\"command\":\"free\"", "restart linux\r"));
    script.push(("linux: restarted", ""));
    script.push((PROMPT, NEXT_INSTANCE));
    script.push(("keyboard to linux", "poweroff -f\r"));
    let log = Log::boot_scripted_within("lifecycle", &board, &script, Duration::from_secs(240));
    std::fs::remove_file(&bundle).ok();
    log.powered_off()
        .has("linux: stopped: destroyed by the operator")
        .has("linux: restarted")
        .check(
            log.count("GUEST-INIT: up") == 2,
            "Linux booted twice: at start and after `restart`",
        )
        .check(
            log.count("victim: stopped: destroyed by the operator") == CYCLES,
            "the victim was destroyed every cycle",
        )
        .lacks("PANIC");
    let free: Vec<u64> = json_replies(log.serial(), "free")
        .iter()
        .filter_map(|reply| reply["memory"]["free_mib"].as_u64())
        .collect();
    log.check(
        free.len() == CYCLES + 1 && free.iter().all(|mib| *mib == free[0]),
        &format!("`free` after each destroy: {free:?}"),
    );
}

#[test]
fn a_bundle_with_one_corrupted_instance_starts_the_others() {
    let (board, bundle) = board_with_instances(
        "corrupted",
        &[
            instance("basic", guest("basic"), None, 64, 1, true),
            instance("timer", guest("timer"), None, 64, 1, true),
        ],
        2,
    );
    // Flip a byte inside the timer guest's kernel: its CRC no longer matches.
    let timer = std::fs::read(guest("timer")).unwrap();
    let mut blob = std::fs::read(&bundle).unwrap();
    let needle = &timer[64..128];
    let at = blob
        .windows(needle.len())
        .position(|window| window == needle)
        .expect("the timer kernel is in the bundle");
    blob[at] ^= 0xff;
    std::fs::write(&bundle, &blob).unwrap();
    let log = Log::boot("corrupted instance", &board);
    std::fs::remove_file(&bundle).ok();
    log.powered_off()
        .has("timer: cannot start: guest bundle: guest bundle image kernel-2 fails its hash check")
        .has("[basic] RESULT: PASS")
        .lacks("[timer]")
        .lacks("PANIC");
}
