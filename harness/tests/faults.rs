//! The fault-injection matrix: every fault of `mpcvit_transport::fault` x
//! every direction of both links (device->host, host->device, dealer->host,
//! host->dealer) x protocol phases (set-up, first protocol frame, a middle
//! frame, the last frame: the output reveal on host->device), on real
//! `mpcvit dealer` / `host` / `device` processes with relays that inject the
//! fault. For every cell: the device ends with a clear error (exit 1, one
//! line) or, for a delay, the correct prediction; nothing panics; nothing
//! waits past its timeout; host and dealer keep serving (a clean session
//! after each direction succeeds). The table is printed (`--nocapture`)
//! and recorded in docs/robustness.md.

mod common;
use common::{Server, bin, expected, s, server_logged, setup};
use mpcvit_transport::fault::{Fault, FaultyWriter, Units};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which way a relay injects: client->server (`up`) or server->client.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Dir {
    Up,
    Down,
}

#[derive(Clone, Copy, Debug)]
struct Cell {
    dir: Dir,
    fault: Fault,
    at: u64,
}

/// A relay between clients and `upstream` that applies the current cell (if
/// any) to each new connection, and counts the frames of the last one.
struct Relay {
    addr: String,
    cell: Arc<Mutex<Option<Cell>>>,
    frames: Arc<Mutex<(u64, u64)>>,
}

fn pump(
    mut from: TcpStream,
    (to, units): (TcpStream, Units),
    fault: Option<(Fault, u64)>,
    count: Arc<Mutex<(u64, u64)>>,
    up: bool,
) {
    let peer = to.try_clone().ok();
    let (f, at) = fault.unwrap_or((Fault::Drop, u64::MAX));
    let mut w = FaultyWriter::with_units(to, units, f, at, 0x9E37_79B9);
    let mut buf = [0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if w.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
        if let Ok(mut c) = count.lock() {
            if up {
                c.0 = w.frames();
            } else {
                c.1 = w.frames();
            }
        }
    }
    // End both directions: a killed or broken relay is a vanished peer.
    let _ = from.shutdown(Shutdown::Both);
    if let Some(p) = peer {
        let _ = p.shutdown(Shutdown::Both);
    }
}

/// A relay to `upstream` whose streams are `units` (up, down).
fn relay(upstream: String, (units_up, units_down): (Units, Units)) -> Relay {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let cell: Arc<Mutex<Option<Cell>>> = Arc::new(Mutex::new(None));
    let frames = Arc::new(Mutex::new((0, 0)));
    let (c2, f2) = (cell.clone(), frames.clone());
    std::thread::spawn(move || {
        for a in l.incoming() {
            let Ok(a) = a else { continue };
            let Ok(b) = TcpStream::connect(&upstream) else { continue };
            let _ = (a.set_nodelay(true), b.set_nodelay(true));
            let cell = *c2.lock().expect("cell");
            let pick = |d: Dir| cell.filter(|c| c.dir == d).map(|c| (c.fault, c.at));
            let (a2, b2) = (a.try_clone().expect("clone"), b.try_clone().expect("clone"));
            let (fu, fd) = (f2.clone(), f2.clone());
            let (up, down) = (pick(Dir::Up), pick(Dir::Down));
            std::thread::spawn(move || pump(a, (b, units_up), up, fu, true));
            std::thread::spawn(move || pump(b2, (a2, units_down), down, fd, false));
        }
    });
    Relay { addr, cell, frames }
}

#[derive(Default)]
struct Tally {
    cells: usize,
    errors: usize,
    ok: usize,
    wrong: usize,
    panics: usize,
    hangs: usize,
}

const TIMEOUT_S: u64 = 3;

// One test over the whole matrix (servers restarted per link, cells
// tallied into the printed table), hence its length.
#[test]
fn fault_matrix() {
    let st = setup("faults");
    let logs = st.dir.join("logs");
    std::fs::create_dir_all(&logs).expect("logs");
    // the servers' logs are kept: a panic in a session thread shows there,
    // not in the device's exit
    let (dealer_log, host_log) = (logs.join("dealer.log"), logs.join("host.log"));
    let keys = s(&st.keys);
    let dealer = server_logged(
        &["dealer", "--listen", "127.0.0.1:0", "--keys", keys, "--timeout", "3"],
        Some(&dealer_log),
    );
    // the host-dealer link is sealed (a mutual opening: 16 bytes from the
    // host, 12 from the dealer): its faults hit records
    let to_dealer = relay(
        dealer.1.clone(),
        (Units::Records { prefix: 16 }, Units::Records { prefix: 12 }),
    );
    let host = server_logged(
        &[
            "host",
            "--listen",
            "127.0.0.1:0",
            "--dealer",
            &to_dealer.addr,
            "--model",
            s(&st.model),
            "--keys",
            keys,
            "--timeout",
            "3",
        ],
        Some(&host_log),
    );
    let to_host = relay(host.1.clone(), (Units::Frames, Units::Frames));
    let want = expected(&st, 0);

    // Calibration: units (frames; records on the sealed dealer link) each
    // way on a clean session.
    let run = |dev_addr: &str| -> (Option<i32>, String, String, Duration) {
        let t0 = Instant::now();
        let mut c = bin()
            .args([
                "device",
                "--connect",
                dev_addr,
                "--blob",
                s(&st.blob),
                "--keys",
                s(&st.keys),
            ])
            .args(["--images", s(&st.images), "--index", "0", "--json", "--timeout", "3"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("device");
        let deadline = Duration::from_secs(4 * TIMEOUT_S + 5);
        loop {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            if t0.elapsed() > deadline {
                let _ = c.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let hung = t0.elapsed() > deadline;
        let o = c.wait_with_output().expect("wait");
        let code = if hung { None } else { o.status.code() };
        (
            code,
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
            t0.elapsed(),
        )
    };
    let (code, out, _, _) = run(&to_host.addr);
    assert_eq!(code, Some(0), "clean session through the relays failed");
    assert!(out.contains(&format!("\"prediction\":{want}")));
    let (d_up, d_down) = *to_host.frames.lock().expect("frames");
    let (l_up, l_down) = *to_dealer.frames.lock().expect("frames");
    assert!(
        d_up > 3 && d_down > 3 && l_down > 3 && l_up >= 1,
        "{d_up} {d_down} {l_up} {l_down}"
    );

    let links: [(&str, &Relay, Dir, u64); 4] = [
        ("device->host", &to_host, Dir::Up, d_up),
        ("host->device", &to_host, Dir::Down, d_down),
        ("host->dealer", &to_dealer, Dir::Up, l_up),
        ("dealer->host", &to_dealer, Dir::Down, l_down),
    ];
    let full = std::env::var_os("MPCVIT_FAULTS_FULL").is_some_and(|v| v == "1");
    let mut table = String::from(
        "| link | units | phases (unit index) | cells | clear errors | correct results | wrong results | panics | hangs |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut total = Tally::default();
    let mut harmless: Vec<String> = Vec::new();
    for (name, r, dir, n) in links {
        // CI samples four phases per link; MPCVIT_FAULTS_FULL=1 tries every
        // frame (every step of every layer, each way).
        let mut phases = if full {
            (0..n).collect()
        } else {
            vec![0, 1, n / 2, n - 1]
        };
        phases.retain(|&p| p < n);
        phases.dedup();
        let mut t = Tally::default();
        for &at in &phases {
            for fault in Fault::ALL {
                *r.cell.lock().expect("cell") = Some(Cell { dir, fault, at });
                let (code, out, err, took) = run(&to_host.addr);
                t.cells += 1;
                let good = out.contains(&format!("\"prediction\":{want}"));
                match code {
                    None => t.hangs += 1,
                    Some(0) if good => {
                        t.ok += 1;
                        if !matches!(fault, Fault::Delay(_)) {
                            harmless.push(format!("{name} {} @{at}", fault.name()));
                        }
                    }
                    Some(0) => t.wrong += 1,
                    Some(1) => {
                        let line = err.trim();
                        assert!(
                            line.lines().count() == 1 && line.starts_with("mpcvit: error: "),
                            "{name} {} @{at}: not one clear line: {line:?}",
                            fault.name()
                        );
                        t.errors += 1;
                    }
                    Some(c) => {
                        assert!(
                            c != 101 || !err.contains("panicked"),
                            "{name} {} @{at}: {err}",
                            fault.name()
                        );
                        t.panics += 1;
                    }
                }
                // A fault may fail the session, never the servers.
                assert!(took < Duration::from_secs(4 * TIMEOUT_S + 5));
                if let Fault::Delay(_) = fault {
                    assert!(good, "{name} delay @{at}: a delay must not fail the session: {err}");
                }
            }
        }
        *r.cell.lock().expect("cell") = None;
        // Still serving: a clean session right after.
        let (code, out, err, _) = run(&to_host.addr);
        assert!(
            code == Some(0) && out.contains(&format!("\"prediction\":{want}")),
            "after {name}: {err}"
        );
        let shown = if full {
            format!("all {n}")
        } else {
            phases.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
        };
        table.push_str(&format!(
            "| {name} | {n} | {} | {} | {} | {} | {} | {} | {} |\n",
            shown, t.cells, t.errors, t.ok, t.wrong, t.panics, t.hangs
        ));
        total.cells += t.cells;
        total.errors += t.errors;
        total.ok += t.ok;
        total.wrong += t.wrong;
        total.panics += t.panics;
        total.hangs += t.hangs;
    }
    table.push_str(&format!(
        "| all | | | {} | {} | {} | {} | {} | {} |\n",
        total.cells, total.errors, total.ok, total.wrong, total.panics, total.hangs
    ));
    println!("{table}");
    println!(
        "non-delay faults that left the session correct: {}",
        harmless.join("; ")
    );
    let alive = |s: &mut Server| s.0.try_wait().ok().flatten().is_none();
    let (mut dealer, mut host) = (dealer, host);
    assert!(alive(&mut dealer) && alive(&mut host), "a server died");
    assert_eq!(total.panics, 0, "{table}");
    assert_eq!(total.hangs, 0, "{table}");
    assert_eq!(total.wrong, 0, "{table}");
    // Every cell is a clear error or a correct result, and the correct
    // ones are the delays and the repeats of a link's last unit.
    assert_eq!(total.errors + total.ok, total.cells, "{table}");
    assert!(total.ok <= total.cells / Fault::ALL.len() * 3, "{table}");
    // no server thread panicked, whatever the device saw
    for log in [&dealer_log, &host_log] {
        let text = std::fs::read_to_string(log).expect("server log");
        assert!(!text.contains("panicked"), "{}: {text}", log.display());
    }
    let _ = std::io::stdout().flush();
}
