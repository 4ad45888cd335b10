//! Load: one `mpcvit host` (and dealer) serving 100 sequential and then 8
//! concurrent device sessions over TCP (tiny model). Every prediction is the
//! fixed-point reference's; the host's threads and open file descriptors
//! return to where they started; its resident memory is printed at start,
//! after the sequential and after the concurrent sessions (recorded in
//! docs/robustness.md; checked only for gross growth, not timed).

mod common;
use common::{device, expected, prediction, setup, start_dealer, start_host};

#[cfg(target_os = "linux")]
fn proc_stat(pid: u32) -> (u64, u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("field")
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fd").count();
    (field("VmRSS:"), field("Threads:"), fds)
}

#[cfg(target_os = "linux")]
#[test]
fn host_serves_100_sequential_and_8_concurrent_sessions() {
    let st = setup("load");
    let dealer = start_dealer(&st, &[]);
    let host = start_host(&st, &dealer.1, &[]);
    let pid = host.0.id();
    let want: Vec<usize> = (0..4).map(|i| expected(&st, i)).collect();
    let h = host.1.as_str();
    let stref = &st;
    let concurrent = || -> Vec<(usize, std::process::Output)> {
        std::thread::scope(|sc| {
            let t: Vec<_> = (0..8)
                .map(|k| sc.spawn(move || (k, device(stref, h, k % 4, &[]))))
                .collect();
            t.into_iter().map(|t| t.join().expect("thread")).collect()
        })
    };
    // Warm-up (the allocator's per-thread arenas fill once), then the
    // baseline.
    let threads0 = proc_stat(pid);
    for (k, o) in concurrent() {
        assert_eq!(prediction(&o).0, want[k % 4]);
    }
    for k in 0..10 {
        assert_eq!(prediction(&device(&st, h, k % 4, &[])).0, want[k % 4]);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let start = proc_stat(pid);
    let mut sessions = std::collections::HashSet::new();
    for k in 0..100 {
        let (p, sid) = prediction(&device(&st, &host.1, k % 4, &[]));
        assert_eq!(p, want[k % 4], "sequential session {k}");
        sessions.insert(sid);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let after_seq = proc_stat(pid);
    for (k, o) in concurrent() {
        let (p, sid) = prediction(&o);
        assert_eq!(p, want[k % 4], "concurrent session {k}");
        sessions.insert(sid);
    }
    assert_eq!(sessions.len(), 108, "every session has its own id");
    let _ = after_seq;
    // Session threads end shortly after their device.
    let mut end = proc_stat(pid);
    for _ in 0..50 {
        if end.1 <= threads0.1 && end.2 <= threads0.2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        end = proc_stat(pid);
    }
    println!(
        "host RSS: before warm-up {} kB, after warm-up (8 concurrent + 10 sequential) {} kB, after 100 sequential {} kB, after 8 more concurrent {} kB; threads {} -> {}; open fds {} -> {}",
        threads0.0, start.0, after_seq.0, end.0, threads0.1, end.1, threads0.2, end.2
    );
    assert!(end.1 <= threads0.1, "threads leaked: {} -> {}", threads0.1, end.1);
    assert!(end.2 <= threads0.2, "sockets/files leaked: {} -> {}", threads0.2, end.2);
    // Flat after warm-up: 108 more sessions must not grow the host by more
    // than a few MB.
    assert!(end.0 < start.0 + 8 * 1024, "RSS grew: {start:?} -> {end:?}");
}
