//! The parties as real processes: `mpcvit demo`, and `dealer`, `host`,
//! `device` started by hand on a tiny model: predictions equal the
//! fixed-point reference, sessions run concurrently, the host survives
//! devices that vanish or misbehave mid-inference, and every failure is one
//! clear line with exit code 1 (2 for usage).

mod common;
use common::{
    bin, connect, device, device_key, device_offer, expected, half_device, prediction, s, setup, start_dealer,
    start_host, tiny_model_seeded,
};
use mpcvit_core::SessionId;
use mpcvit_core::session::{self, Accept, Challenge, DeviceHello, Message};
use mpcvit_transport::tcp::Tcp;
use mpcvit_transport::{FrameKind, Link};
use std::net::TcpStream;
use std::process::{Output, Stdio};

fn fails_with(o: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    if code == 1 {
        assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
        assert!(err.starts_with("mpcvit: error: "), "{err:?}");
    }
}

/// The host's next set-up frame on `l`: its kind and payload.
fn next_frame(l: &mut Link<Tcp>) -> (FrameKind, Vec<u8>) {
    let mut buf = [0u8; 1024];
    let (k, p) = l.recv(&mut buf).expect("frame");
    (k, p.to_vec())
}

// One scenario on one set of servers, step by step (each step needs the
// servers the earlier ones left running), hence its length.
#[test]
fn parties_as_processes() {
    let st = setup("parties");
    let dealer = start_dealer(&st, &[]);
    let host = start_host(&st, &dealer.1, &["--timeout", "10"]);
    let h = host.1.as_str();

    // One inference: the fixed-point reference's prediction.
    let (p0, sid0) = prediction(&device(&st, h, 0, &[]));
    assert_eq!(p0, expected(&st, 0));

    // Concurrent sessions: each correct, each with its own session id.
    let stref = &st;
    let outs: Vec<Output> = std::thread::scope(|sc| {
        let hs: Vec<_> = (1..4).map(|i| sc.spawn(move || device(stref, h, i, &[]))).collect();
        hs.into_iter().map(|t| t.join().expect("thread")).collect()
    });
    let mut sids = vec![sid0];
    for (i, o) in outs.iter().enumerate() {
        let (p, sid) = prediction(o);
        assert_eq!(p, expected(&st, i + 1), "image {}", i + 1);
        sids.push(sid);
    }
    sids.sort();
    sids.dedup();
    assert_eq!(sids.len(), 4, "distinct session ids");

    // A device that vanishes after set-up, and one that sends garbage
    // mid-inference: the host ends those sessions and serves the next.
    drop(half_device(&st, h));
    let mut l = half_device(&st, h);
    l.send(FrameKind::Data, &[0xAB; 5]).expect("junk");
    drop(l);
    let (p, _) = prediction(&device(&st, h, 2, &[]));
    assert_eq!(p, expected(&st, 2));

    // Shaped link: same prediction.
    let (p, _) = prediction(&device(&st, h, 3, &["--link", "lan"]));
    assert_eq!(p, expected(&st, 3));

    // A blob for another model: refused with the fix in the message.
    let other = st.dir.join("other.mpcvit");
    tiny_model_seeded(&other, 41);
    let other_blob = st.dir.join("other.blob");
    let o = bin()
        .args([
            "provision",
            "--model",
            s(&other),
            "--keys",
            s(&st.keys),
            "--out",
            s(&other_blob),
        ])
        .output()
        .expect("provision");
    assert!(o.status.success());
    let o = bin()
        .args([
            "device",
            "--connect",
            h,
            "--blob",
            s(&other_blob),
            "--keys",
            s(&st.keys),
        ])
        .args(["--images", s(&st.images), "--index", "0"])
        .output()
        .expect("device");
    fails_with(&o, 1, "provision the device for this model");
    // an unauthenticated device is not told which model the host serves
    let served = mpcvit_core::provision::model_crc(&std::fs::read(&st.model).expect("model"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains(&format!("{served:08x}")), "{err}");

    // A device whose key the dealer does not hold.
    let stranger = st.dir.join("stranger");
    let _ = std::fs::remove_dir_all(&stranger);
    assert!(
        bin()
            .args(["keygen", "--out", s(&stranger)])
            .status()
            .expect("keygen")
            .success()
    );
    let o = bin()
        .args(["device", "--connect", h, "--blob", s(&st.blob), "--keys", s(&stranger)])
        .args(["--images", s(&st.images), "--index", "0"])
        .output()
        .expect("device");
    fails_with(&o, 1, "key confirmation failed");

    // A blob of this model made under another host key (another
    // deployment's `host.key`): refused at set-up, never a wrong answer.
    let foreign_blob = st.dir.join("foreign.blob");
    let o = bin()
        .args([
            "provision",
            "--model",
            s(&st.model),
            "--keys",
            s(&stranger),
            "--out",
            s(&foreign_blob),
        ])
        .output()
        .expect("provision");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = bin()
        .args([
            "device",
            "--connect",
            h,
            "--blob",
            s(&foreign_blob),
            "--keys",
            s(&st.keys),
        ])
        .args(["--images", s(&st.images), "--index", "0"])
        .output()
        .expect("device");
    fails_with(&o, 1, "made with another host key");

    // Still serving.
    let (p, _) = prediction(&device(&st, h, 1, &[]));
    assert_eq!(p, expected(&st, 1));

    // A port in use.
    let o = bin()
        .args([
            "host",
            "--listen",
            h,
            "--dealer",
            &dealer.1,
            "--model",
            s(&st.model),
            "--keys",
            s(&st.keys),
        ])
        .output()
        .expect("host");
    fails_with(&o, 1, "cannot listen on");
    // The host is gone.
    let (dealer_addr, host_addr) = (dealer.1.clone(), host.1.clone());
    drop(host);
    let o = device(&st, &host_addr, 0, &[]);
    fails_with(&o, 1, "cannot connect to the host");
    drop(dealer);
    let _ = dealer_addr;
}

#[test]
fn cli_errors_are_one_clear_line() {
    let st = setup("parties-errors");
    let missing = st.dir.join("missing.mpcvit");
    let o = bin()
        .args(["host", "--model", s(&missing), "--keys", s(&st.keys)])
        .output()
        .expect("host");
    fails_with(&o, 1, "cannot read model");
    let o = bin()
        .args([
            "provision",
            "--model",
            s(&st.blob),
            "--keys",
            s(&st.keys),
            "--out",
            s(&st.dir.join("x")),
        ])
        .output()
        .expect("provision");
    fails_with(&o, 1, "not a usable model file");
    let o = bin()
        .args(["device", "--blob", s(&st.model), "--keys", s(&st.keys), "--index", "0"])
        .output()
        .expect("device");
    // a blob's errors speak of the blob, not of a model file
    fails_with(&o, 1, "not an mpcvit provisioning blob (bad magic)");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("model file"));
    let o = bin()
        .args(["device", "--blob", s(&st.blob), "--keys", s(&st.keys), "--index", "0"])
        .args(["--images", s(&st.dir.join("no-such-dataset.gz"))])
        .output()
        .expect("device");
    fails_with(&o, 1, "cannot read");
    let o = bin()
        .args(["device", "--blob", s(&st.blob), "--keys", s(&st.keys), "--index", "9"])
        .args(["--images", s(&st.images)])
        .output()
        .expect("device");
    fails_with(&o, 1, "out of range");
    let o = bin()
        .args(["device", "--blob", s(&st.blob), "--keys", s(&st.dir), "--index", "0"])
        .output()
        .expect("device");
    fails_with(&o, 1, "mpcvit keygen");
    let o = bin().args(["keygen", "--out", s(&st.keys)]).output().expect("keygen");
    fails_with(&o, 1, "never overwrites");
    let o = bin().args(["demo", "--link", "pigeon"]).output().expect("demo");
    fails_with(&o, 2, "unknown link");
    let o = bin().args(["demo", "--images", "0"]).output().expect("demo");
    fails_with(&o, 2, "--images");
    let o = bin().args(["demo", "--model", s(&missing)]).output().expect("demo");
    fails_with(&o, 1, "cannot read model");
}

/// A fresh, empty directory for a demo's `TMPDIR`, so that what the demo
/// leaves there can be seen.
fn demo_tmp(tag: &str) -> std::path::PathBuf {
    let d = common::tmpdir(tag);
    std::fs::remove_dir_all(&d).expect("clear tmp");
    common::tmpdir(tag)
}

fn entries(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(d)
        .expect("read tmp")
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// The README's main command with 3 images: exit 0, the secure predictions
/// agree with the plaintext, and the scratch directory is gone afterwards.
#[test]
fn demo_three_images() {
    let tmp = demo_tmp("demo-three");
    let c = bin()
        .env("TMPDIR", &tmp)
        .args(["demo", "--images", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("demo");
    let o = c.wait_with_output().expect("wait");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("secure = fixed-point plaintext on 3/3 images"), "{out}");
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.ends_with(|c: char| c.is_ascii_digit()) && l.contains("yes"))
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(out.contains("rounds") && out.contains("WAN"), "{out}");
    assert_eq!(
        entries(&tmp),
        Vec::<std::path::PathBuf>::new(),
        "the demo left its scratch"
    );
    std::fs::remove_dir_all(&tmp).ok();
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let ppid = after.split_whitespace().nth(1).and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.extend(e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()));
        }
    }
    out
}

/// Ctrl-C (SIGINT) during the demo: it exits 130, its children are gone and
/// its scratch directory is removed.
#[cfg(target_os = "linux")]
#[test]
fn demo_ctrl_c_cleans_up() {
    let tmp = demo_tmp("demo-ctrl-c");
    let c = bin()
        .env("TMPDIR", &tmp)
        .args(["demo", "--images", "16"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("demo");
    let pid = c.id();
    let t0 = std::time::Instant::now();
    let mut kids = vec![];
    // Wait until dealer, host and a device run.
    while t0.elapsed() < std::time::Duration::from_secs(60) {
        kids = children_of(pid);
        if kids.len() >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(kids.len() >= 3, "children: {kids:?}");
    // its scratch: one new directory of its own, for this user only
    let made = entries(&tmp);
    assert_eq!(made.len(), 1, "{made:?}");
    let name = made[0].file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
    assert!(
        name.starts_with("mpcvit-demo-") && name != format!("mpcvit-demo-{pid}"),
        "{name}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&made[0]).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "scratch mode {mode:o}");
    }
    let st = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let o = c.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(130), "{}", String::from_utf8_lossy(&o.stderr));
    std::thread::sleep(std::time::Duration::from_millis(300));
    for k in kids {
        let alive = std::fs::read_to_string(format!("/proc/{k}/stat"))
            .map(|s| !s.rsplit_once(')').is_some_and(|x| x.1.trim_start().starts_with('Z')))
            .unwrap_or(false);
        assert!(!alive, "child {k} survived the demo");
    }
    assert_eq!(
        entries(&tmp),
        Vec::<std::path::PathBuf>::new(),
        "the demo left its scratch"
    );
    std::fs::remove_dir_all(&tmp).ok();
}

/// `--psk`: host and device seal their link (ChaCha20-Poly1305); a device
/// with another key or none fails with a clear line, and the host goes on.
#[test]
fn sealed_link_with_a_pre_shared_key() {
    let st = setup("parties-psk");
    let psk_dir = st.dir.join("psk");
    let other_dir = st.dir.join("psk-other");
    for d in [&psk_dir, &other_dir] {
        let _ = std::fs::remove_dir_all(d);
        assert!(
            bin()
                .args(["keygen", "--out", s(d)])
                .output()
                .expect("keygen")
                .status
                .success()
        );
    }
    let psk = psk_dir.join("host.key");
    let dealer = start_dealer(&st, &[]);
    let host = start_host(&st, &dealer.1, &["--timeout", "5", "--psk", s(&psk)]);
    let (p, _) = prediction(&device(&st, &host.1, 0, &["--psk", s(&psk)]));
    assert_eq!(p, expected(&st, 0));
    let o = device(
        &st,
        &host.1,
        0,
        &["--psk", s(&other_dir.join("host.key")), "--timeout", "5"],
    );
    fails_with(&o, 1, "same --psk");
    // the host waits for a sealed opening, the device for a challenge: the
    // device's timeout (shorter here) says what is likely wrong
    let o = device(&st, &host.1, 0, &["--timeout", "2"]);
    fails_with(&o, 1, "require --psk");
    let (p, _) = prediction(&device(&st, &host.1, 1, &["--psk", s(&psk)]));
    assert_eq!(p, expected(&st, 1));
}

/// A device that cuts each layer into tiles (the host and dealer follow the
/// tile it announces): the same prediction as the whole-layer run, more
/// rounds, a smaller working set, and every buffer within the bound a
/// firmware sizes its static buffers by (`mpcvit_device::buffers`).
#[test]
fn tiled_device_working_set() {
    use mpcvit::device::parse_tile;
    use mpcvit_core::ops::vit;
    let st = setup("tiled");
    let dealer = start_dealer(&st, &[]);
    let host = start_host(&st, &dealer.1, &["--timeout", "10"]);
    let blob = std::fs::read(&st.blob).expect("blob");
    let arch = mpcvit_core::provision::BlobView::parse(&blob).expect("blob").arch();
    let want = expected(&st, 1);
    let mut last: Option<(u64, u64)> = None;
    for t in ["whole", "5,2,5", "2,1,2", "1,1,1"] {
        let tile = parse_tile(t).expect("tile");
        let o = device(&st, &host.1, 1, &["--tile", t]);
        let (p, _) = prediction(&o);
        assert_eq!(p, want, "tile {t}");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        let ws = &v["working_set"];
        let get = |k: &str| ws[k].as_u64().expect("field");
        let bound = mpcvit_device::buffers(&arch, tile);
        assert!(
            get("tx_bytes") <= bound.tx as u64,
            "tile {t}: tx {} > {}",
            get("tx_bytes"),
            bound.tx
        );
        assert!(
            get("rx_bytes") <= bound.rx as u64,
            "tile {t}: rx {} > {}",
            get("rx_bytes"),
            bound.rx
        );
        assert!(get("tmp_bytes") <= 8 * bound.tmp as u64, "tile {t}: tmp");
        assert_eq!(
            get("scratch_bytes"),
            8 * vit::scratch_len(
                &arch,
                tile,
                mpcvit_core::Role::Device,
                &mpcvit_core::provision::BlobView::parse(&blob).expect("blob")
            ) as u64
        );
        let total = get("scratch_bytes") + get("tx_bytes") + get("rx_bytes") + get("tmp_bytes");
        let rounds = v["rounds"].as_u64().expect("rounds");
        eprintln!("tile {t}: {rounds} rounds, working set {total} B");
        if let Some((r0, b0)) = last {
            assert!(
                rounds > r0 && total < b0,
                "tile {t}: {rounds} rounds / {total} B after {r0} / {b0}"
            );
        }
        last = Some((rounds, total));
    }
    assert!(parse_tile("1,2").is_err() && parse_tile("a,1,1").is_err());
}

/// By default the host learns nothing of the result; with
/// `--logits-to-host` the device also reveals the logits to the host, which
/// prints the same prediction as one JSON line.
#[test]
fn logits_revealed_to_the_host_on_request() {
    use std::io::BufRead;
    let st = setup("reveal");
    let dealer = start_dealer(&st, &[]);
    let mut host = start_host(&st, &dealer.1, &["--timeout", "10"]);
    let (p, sid) = prediction(&device(&st, &host.1, 2, &["--logits-to-host"]));
    assert_eq!(p, expected(&st, 2));
    let (_, sid_quiet) = prediction(&device(&st, &host.1, 1, &[]));
    let out = host.2.take().expect("host stdout");
    drop(host);
    let lines: Vec<String> = out.lines().map_while(Result::ok).collect();
    let shown: Vec<serde_json::Value> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(shown.len(), 1, "one revealed session: {lines:?}");
    assert_eq!(shown[0]["session"].as_str(), Some(sid.as_str()));
    assert_eq!(shown[0]["prediction"].as_u64(), Some(p as u64));
    assert!(
        !lines.iter().any(|l| l.contains(&sid_quiet)),
        "the quiet session stays private"
    );
}

/// A hello answers one challenge: recorded (with the device key unknown to
/// the recorder) and replayed to the host, alone or as the start of a whole
/// recorded device transcript, it meets a new session id and is refused
/// before the host sends anything but its challenge and the refusal.
#[test]
fn recorded_hellos_and_transcripts_are_refused() {
    let st = setup("parties-replay");
    let dealer = start_dealer(&st, &[]);
    let host = start_host(&st, &dealer.1, &["--timeout", "10"]);
    let h = host.1.as_str();

    // a device's hello, recorded: answered once
    let kd = session::device_session_key(&device_key(&st), 0x5eed);
    let mut l = connect(h);
    let (k, c) = next_frame(&mut l);
    assert_eq!(k, FrameKind::Hello);
    let sid = SessionId(Challenge::decode(&c).expect("challenge").session);
    let offer = device_offer(&st);
    let tag = session::device_tag(&kd, sid, &offer);
    let mut hello = [0u8; DeviceHello::MAX_LEN];
    let hello = DeviceHello {
        offer,
        nonce: 0x5eed,
        tag,
    }
    .encode(&mut hello)
    .expect("encode")
    .to_vec();
    l.send(FrameKind::Hello, &hello).expect("hello");
    let (k, a) = next_frame(&mut l);
    assert_eq!(k, FrameKind::Hello);
    let acc = Accept::decode(&a).expect("accept");
    assert!(session::tags_equal(&acc.tag, &session::dealer_tag(&kd, sid, &tag)));
    drop(l);
    // ... replayed: each replay meets another session id, and is refused
    for _ in 0..3 {
        let mut l = connect(h);
        let (k, c) = next_frame(&mut l);
        assert_eq!(k, FrameKind::Hello);
        assert_ne!(Challenge::decode(&c).expect("challenge").session, sid.0);
        l.send(FrameKind::Hello, &hello).expect("replay");
        let (k, why) = next_frame(&mut l);
        assert_eq!(k, FrameKind::Abort);
        let why = String::from_utf8_lossy(&why);
        assert!(why.contains("replayed from another session"), "{why}");
    }

    // a device of another set-up version hears which, and the fix
    let mut l = connect(h);
    assert_eq!(next_frame(&mut l).0, FrameKind::Hello);
    let mut old = hello.clone();
    old[0] = session::VERSION - 1;
    l.send(FrameKind::Hello, &old).expect("old hello");
    let (k, why) = next_frame(&mut l);
    assert_eq!(k, FrameKind::Abort);
    let why = String::from_utf8_lossy(&why);
    assert!(
        why.contains(&format!("speaks set-up version {}", session::VERSION - 1)),
        "{why}"
    );

    // A whole device transcript, recorded through a relay, then replayed
    // on a new connection: its hello frame, then the rest.
    let relay = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let relay_addr = relay.local_addr().expect("addr").to_string();
    let host_addr = h.to_string();
    let recorder = std::thread::spawn(move || {
        let (mut d, _) = relay.accept().expect("accept");
        let mut up = TcpStream::connect(&host_addr).expect("host");
        let (mut d2, mut up2) = (d.try_clone().expect("clone"), up.try_clone().expect("clone"));
        let down = std::thread::spawn(move || std::io::copy(&mut up2, &mut d2));
        let mut rec = Vec::new();
        let mut buf = [0u8; 1 << 16];
        loop {
            match std::io::Read::read(&mut d, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    rec.extend_from_slice(&buf[..n]);
                    if std::io::Write::write_all(&mut up, &buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = up.shutdown(std::net::Shutdown::Write);
        let _ = down.join();
        rec
    });
    let (p, _) = prediction(&device(&st, &relay_addr, 0, &[]));
    assert_eq!(p, expected(&st, 0));
    let transcript = recorder.join().expect("recorder");
    let frames = frames_of(&transcript);
    assert!(frames.len() > 10, "{} frames recorded", frames.len());
    let mut raw = TcpStream::connect(h).expect("connect");
    raw.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    std::io::Write::write_all(&mut raw, &transcript[..frames[0].1]).expect("hello");
    let mut back = Vec::new();
    let _ = std::io::Read::read_to_end(&mut raw, &mut back);
    let _ = std::io::Write::write_all(&mut raw, &transcript[frames[0].1..]);
    let kinds: Vec<FrameKind> = frames_of(&back).into_iter().map(|f| f.0).collect();
    assert_eq!(
        kinds,
        [FrameKind::Hello, FrameKind::Abort],
        "the host answered the replay with {kinds:?}"
    );
    // and the host goes on serving
    let (p, _) = prediction(&device(&st, h, 1, &[]));
    assert_eq!(p, expected(&st, 1));
}

/// The frames in `b`: each one's kind and where it ends.
fn frames_of(b: &[u8]) -> Vec<(FrameKind, usize)> {
    use mpcvit_transport::frame::{HEADER_LEN, Header, OVERHEAD};
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = b.get(at..at + HEADER_LEN) {
        let h = Header::decode(h.try_into().expect("header"), 1 << 26).expect("frame header");
        at += OVERHEAD + h.len as usize;
        out.push((h.kind, at));
    }
    out
}
