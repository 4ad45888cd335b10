//! A server out of file descriptors: `accept` fails for every pending
//! connection until one closes. The host must wait between attempts (not
//! spin: the probe saw 80-90 % CPU and hundreds of MB of identical
//! warnings), and serve devices again once descriptors are free.

mod common;
use common::{Server, device, expected, half_device, prediction, s, setup, start_dealer};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// User + system CPU time of process `pid`, in clock ticks (`/proc`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // the fields after the command name, which is in parentheses
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

#[test]
fn accept_failures_back_off() {
    let st = setup("limits-fds");
    let dealer = start_dealer(&st, &[]);
    // a host with 24 descriptors: a few for itself, the rest for sessions
    let cmd = format!(
        "ulimit -n 24 && exec {} host --listen 127.0.0.1:0 --dealer {} --model {} --keys {} --timeout 30",
        env!("CARGO_BIN_EXE_mpcvit"),
        dealer.1,
        s(&st.model),
        s(&st.keys)
    );
    // its log goes to a file: a pipe nobody reads would block the host
    let log = st.dir.join("host-limits.log");
    let host = Command::new("sh")
        .args(["-c", &cmd])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("host");
    // killed when the test ends, whatever its end
    let mut host = Server(host, String::new(), None);
    let host_pid = host.0.id();
    let mut line = String::new();
    BufReader::new(host.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let addr = line.trim().rsplit(' ').next().expect("addr").to_string();
    // idle connections: each holds a descriptor of the host until its
    // timeout; past the limit, accept fails for the rest
    let idle: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(&addr).expect("connect")).collect();
    std::thread::sleep(Duration::from_millis(500));
    let t0 = cpu_ticks(host_pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(host_pid) - t0;
    // a spinning accept loop uses a core: ~200 ticks in 2 s
    assert!(
        used < 40,
        "the host used {used} ticks of CPU in 2 s while out of descriptors"
    );
    drop(idle);
    std::thread::sleep(Duration::from_millis(1500));
    let (p, _) = prediction(&device(&st, &addr, 0, &[]));
    assert_eq!(p, expected(&st, 0));
    drop(host);
    // the warnings came at most a few times a second, not in a flood
    let warnings = std::fs::read_to_string(&log)
        .expect("log")
        .matches("accept failed")
        .count();
    assert!((1..100).contains(&warnings), "{warnings} accept warnings");
}

/// Past `--max-sessions` sessions whose device is authenticated, a
/// connection is refused at once, with a reason the device prints (it costs
/// the host no thread and no session memory), and once the sessions in
/// flight end a device is served again.
#[test]
fn connections_past_max_sessions_are_refused_at_once() {
    use std::io::Read;
    let st = setup("limits-sessions");
    let dealer = start_dealer(&st, &[]);
    let host = common::start_host(&st, &dealer.1, &["--max-sessions", "2", "--timeout", "30"]);
    // two devices past set-up (admitted), idle in their inference
    let held: Vec<_> = (0..2).map(|_| half_device(&st, &host.1)).collect();
    let mut third = TcpStream::connect(&host.1).expect("connect");
    third.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let t0 = std::time::Instant::now();
    // refused by the host at once: an Abort frame saying why, then the end
    let mut got = Vec::new();
    let r = third.read_to_end(&mut got);
    assert!(
        r.is_ok()
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "closed after {:?}", t0.elapsed());
    assert!(String::from_utf8_lossy(&got).contains("the host is busy"), "{got:?}");
    // a device refused so says why
    let o = device(&st, &host.1, 1, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("the host is busy"), "{err}");
    drop(held);
    std::thread::sleep(Duration::from_millis(500));
    let (p, _) = prediction(&device(&st, &host.1, 0, &[]));
    assert_eq!(p, expected(&st, 0));
}

/// A flood of connections that never finish their set-up, at the host and
/// at the dealer, each far past `--max-sessions`: a real device is served
/// meanwhile (a new connection takes the slot of the oldest one still in
/// set-up), and each server holds at most its `--max-sessions` threads.
#[test]
fn a_flood_of_idle_connections_does_not_keep_a_device_out() {
    let st = setup("limits-flood");
    let dealer = start_dealer(&st, &["--max-sessions", "4", "--timeout", "60"]);
    let host = common::start_host(&st, &dealer.1, &["--max-sessions", "4", "--timeout", "60"]);
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(TcpStream::connect(&host.1).expect("host"));
        flood.push(TcpStream::connect(&dealer.1).expect("dealer"));
    }
    std::thread::sleep(Duration::from_millis(300));
    for (server, pid) in [("host", host.0.id()), ("dealer", dealer.0.id())] {
        let threads = threads_of(pid);
        // the accept loop, at most 4 sessions, and those closed to make
        // room that have not yet ended
        assert!(threads <= 1 + 2 * 4, "{server}: {threads} threads");
    }
    for i in 0..3 {
        let (p, _) = prediction(&device(&st, &host.1, i, &[]));
        assert_eq!(p, expected(&st, i));
        // the flood goes on between the devices
        for _ in 0..20 {
            flood.push(TcpStream::connect(&host.1).expect("host"));
            flood.push(TcpStream::connect(&dealer.1).expect("dealer"));
        }
    }
    drop(flood);
}

/// Threads of process `pid` (Linux).
fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// A host that never answers: the device gives up after its timeout with a
/// line that says so (the socket's timeout used to surface as
/// `WouldBlock`).
#[test]
fn a_silent_host_is_a_timeout_that_says_so() {
    let st = setup("limits-silent");
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    // accepts, then says nothing
    let _keep = std::thread::spawn(move || {
        let c = l.accept();
        std::thread::sleep(Duration::from_secs(10));
        drop(c);
    });
    let o = device(&st, &addr, 0, &["--timeout", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("did not answer") && err.contains("within 1 s"), "{err}");
    assert!(!err.contains("WouldBlock"), "{err}");
}

/// Slowloris: a client that sends one byte of its hello every half second
/// never trips a 2 s read timeout, but the set-up as a whole has a deadline
/// (the timeout): the host closes the connection soon after it, and serves
/// a device afterwards.
#[test]
fn a_trickling_client_is_cut_at_the_set_up_deadline() {
    use std::io::Read;
    let st = setup("limits-slowloris");
    let dealer = start_dealer(&st, &[]);
    let host = common::start_host(&st, &dealer.1, &["--timeout", "2"]);
    let mut c = TcpStream::connect(&host.1).expect("connect");
    // the host's challenge first
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut challenge = [0u8; 64];
    assert!(c.read(&mut challenge).expect("challenge") > 0);
    let cut = trickle(&mut c).expect("the host kept a trickling connection for 8 s");
    assert!(cut < Duration::from_secs(5), "cut after {cut:?}");
    let (p, _) = prediction(&device(&st, &host.1, 0, &[]));
    assert_eq!(p, expected(&st, 0));
}

/// A frame header's worth of bytes on `c`, one every half second, never
/// completed; after each, a short read tells whether the peer has closed.
/// When it closed, if it did within 8 s.
fn trickle(c: &mut TcpStream) -> Option<Duration> {
    use std::io::{Read, Write};
    let t0 = std::time::Instant::now();
    c.set_read_timeout(Some(Duration::from_millis(10))).expect("timeout");
    for _ in 0..16 {
        std::thread::sleep(Duration::from_millis(500));
        let mut b = [0u8; 64];
        let open = c.write_all(b"M").is_ok()
            && matches!(c.read(&mut b), Err(ref e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
        if !open {
            return Some(t0.elapsed());
        }
    }
    None
}

/// After set-up, only a device that holds the device key is left, yet one
/// frame must still arrive whole within the timeout of its first byte: a
/// device that trickles a frame is cut (each byte within the timeout used
/// to keep the session up to its limit, an hour by default); the wait for
/// a frame to begin (a device computing) keeps the per-read timeout.
#[test]
fn a_device_trickling_a_frame_is_cut_at_the_frame_deadline() {
    let st = setup("limits-frame");
    let dealer = start_dealer(&st, &[]);
    let host = common::start_host(&st, &dealer.1, &["--timeout", "2"]);
    let l = half_device(&st, &host.1);
    let mut c = l.into_inner().get_ref().try_clone().expect("socket");
    // a pause between frames counts towards no frame's deadline (the
    // first byte then comes 1.5 s after the host began to wait, within its
    // 2 s read timeout)
    std::thread::sleep(Duration::from_millis(1000));
    let cut = trickle(&mut c).expect("the host kept a device trickling its frame for 8 s");
    assert!(cut < Duration::from_secs(5), "cut after {cut:?}");
    let (p, _) = prediction(&device(&st, &host.1, 0, &[]));
    assert_eq!(p, expected(&st, 0));
}
