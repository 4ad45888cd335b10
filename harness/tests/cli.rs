//! The `mpcvit` binary: `eval` on a generated model and dataset, and clear
//! errors with exit code 1 (runtime) or 2 (usage).

mod common;
use common::{bin, fake_fmnist, s, tiny_model, tmpdir};

#[test]
fn eval_runs_and_reports_all_three_accuracies() {
    let d = tmpdir("eval");
    fake_fmnist(&d, 6);
    let m = d.join("m.mpcvit");
    tiny_model(&m);
    let j = d.join("r.json");
    let out = bin()
        .args([
            "eval",
            "--model",
            m.to_str().unwrap(),
            "--data-dir",
            d.to_str().unwrap(),
            "--secure",
            "2",
            "--json",
            j.to_str().unwrap(),
        ])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("fixed-point accuracy") && text.contains("agreement with fixed point 2/2"),
        "{text}"
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&j).expect("json")).expect("parse");
    assert_eq!(r["images"], 6);
    assert_eq!(r["logit_error_images"], 2);
    let e = r["max_logit_error"].as_f64().expect("a logit error");
    assert!((0.0..1.0 / 128.0).contains(&e), "secure logits {e} off fixed point");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn an_interrupted_secure_eval_resumes_from_its_journal() {
    let d = tmpdir("eval-journal");
    fake_fmnist(&d, 6);
    let m = d.join("m.mpcvit");
    tiny_model(&m);
    let j = d.join("runs.jsonl");
    let eval = |secure: &str| {
        let out = bin()
            .args([
                "eval",
                "--model",
                m.to_str().unwrap(),
                "--data-dir",
                d.to_str().unwrap(),
            ])
            .args(["--secure", secure, "--journal", j.to_str().unwrap()])
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    eval("2");
    let first = std::fs::read_to_string(&j).expect("journal");
    assert_eq!(first.lines().count(), 2, "{first}");
    // the first run as a journal from before logit errors were recorded
    let cut = first.find(",\"max_logit_error\"").expect("a logit error");
    let end = cut + first[cut..].find('}').unwrap();
    let first = format!("{}{}", &first[..cut], &first[end..]);
    // a torn last line and a line of another model are dropped on resume
    let mut torn = first.clone();
    torn.push_str(
        &first
            .lines()
            .next()
            .unwrap()
            .replace("\"model_crc\":", "\"model_crc\":1"),
    );
    torn.push_str("\n{\"model_crc\":");
    std::fs::write(&j, torn).expect("write");
    let text = eval("4");
    assert!(text.contains("agreement with fixed point 4/4"), "{text}");
    assert!(text.contains("(over 3 of the 4 images)"), "{text}");
    let second = std::fs::read_to_string(&j).expect("journal");
    assert!(second.starts_with(&first), "the runs already made are kept:\n{second}");
    let images: Vec<u64> = second
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("whole lines")["image"]
                .as_u64()
                .unwrap()
        })
        .collect();
    // 2 of 6 images spread: 0, 3; 4 of 6: 0, 1, 3, 4
    assert_eq!(images, [0, 3, 1, 4], "each image once, the first two not run again");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn errors_say_what_failed_with_exit_codes() {
    let d = tmpdir("err");
    let out = bin()
        .args(["eval", "--model", d.join("missing.mpcvit").to_str().unwrap()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read model") && err.lines().count() == 1, "{err}");

    let bad = d.join("bad.mpcvit");
    std::fs::write(&bad, b"not a model").expect("write");
    let out = bin()
        .args(["eval", "--model", bad.to_str().unwrap()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));

    let m = d.join("m.mpcvit");
    tiny_model(&m);
    let out = bin()
        .args([
            "eval",
            "--model",
            m.to_str().unwrap(),
            "--data-dir",
            d.join("nowhere").to_str().unwrap(),
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dataset-fashion-mnist"));

    // a bench results file that is not one is refused before any inference
    // runs (a long run's rows are not lost at its end), and left as it was
    let junk = d.join("results.json");
    std::fs::write(&junk, b"not json").expect("write");
    let out = bin()
        .args(["bench", "--mixes", "scale", "--out", junk.to_str().unwrap()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a bench results file") && !err.contains("bench: fmnist scale"),
        "{err}"
    );
    assert_eq!(std::fs::read(&junk).expect("read"), b"not json");

    let out = bin().args(["eval", "--no-such-flag"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&d).ok();
}

/// `keygen` makes both keys or neither: with a `device.key` already in the
/// folder it fails and leaves no `host.key` behind (one that would match no
/// device key), and the existing file untouched.
#[test]
fn keygen_makes_both_keys_or_neither() {
    let d = tmpdir("keygen-atomic");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    std::fs::write(d.join("device.key"), "someone else's\n").expect("write");
    let o = bin()
        .args(["keygen", "--out", d.to_str().unwrap()])
        .output()
        .expect("keygen");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("never overwrites"));
    assert!(!d.join("host.key").exists(), "a lone host.key was left");
    assert_eq!(
        std::fs::read_to_string(d.join("device.key")).expect("read"),
        "someone else's\n"
    );
    // an empty folder gets both, 0600
    let e = d.join("fresh");
    let o = bin()
        .args(["keygen", "--out", e.to_str().unwrap()])
        .output()
        .expect("keygen");
    assert!(o.status.success());
    for k in ["host.key", "device.key"] {
        let m = std::fs::metadata(e.join(k)).expect("key");
        #[cfg(unix)]
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777,
            0o600,
            "{k}"
        );
    }
}

/// An all-zero key is no secret: refused with one clear line.
#[test]
fn all_zero_key_is_refused() {
    let d = tmpdir("zero-key");
    let p = d.join("host.key");
    std::fs::write(&p, format!("{}\n", "0".repeat(64))).expect("write");
    let e = mpcvit::keys::read_key(&p).expect_err("all-zero key");
    assert!(e.contains("all-zero"), "{e}");
}

/// `import --frac-bits` takes what fixed point supports (1..=30), a usage
/// error otherwise (it used to write 0 and 31..=255, and 272 became 16).
#[test]
fn import_frac_bits_out_of_range_is_a_usage_error() {
    for f in ["0", "31", "272"] {
        let o = bin()
            .args(["import", "x.pth", "--out", "y.mpcvit", "--frac-bits", f])
            .output()
            .expect("import");
        assert_eq!(o.status.code(), Some(2), "{f}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("frac-bits"), "{f}");
    }
}

/// Files the user names are read only if they are regular files of a
/// sane size: `/dev/zero` as a model (it used to grow until memory ran
/// out) and a FIFO as a key or a blob (it used to hang) are one clear
/// error within seconds.
#[test]
fn special_files_are_refused_not_read() {
    let d = tmpdir("special-files");
    let fifo = d.join("fifo");
    let _ = std::fs::remove_file(&fifo);
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success(),
        "mkfifo"
    );
    let keys = d.join("keys");
    let _ = std::fs::remove_dir_all(&keys);
    std::fs::create_dir_all(&keys).expect("keys");
    std::os::unix::fs::symlink(&fifo, keys.join("host.key")).expect("link");
    let f = fifo.to_str().unwrap();
    for args in [
        vec![
            "provision",
            "--model",
            "/dev/zero",
            "--keys",
            keys.to_str().unwrap(),
            "--out",
            "x.blob",
        ],
        vec!["memory", "--model", f],
        vec!["host", "--model", "/dev/zero", "--keys", keys.to_str().unwrap()],
        vec!["dealer", "--keys", keys.to_str().unwrap()],
    ] {
        let mut c = bin()
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let t0 = std::time::Instant::now();
        while c.try_wait().expect("wait").is_none() && t0.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let done = c.try_wait().expect("wait").is_some();
        if !done {
            let _ = c.kill();
        }
        let o = c.wait_with_output().expect("output");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(done, "{args:?} still running after 10 s");
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("not a regular file"), "{args:?}: {err}");
    }
}

/// A model whose weights are finite, encodable, but so large that a linear
/// layer's products would leave the 64-bit ring (its secure and fixed-point
/// logits used to differ by 1e9) is refused when it is loaded, by
/// `provision` and `host` alike, with one clear line.
#[test]
fn weights_too_large_for_the_ring_are_refused_at_load() {
    use mpcvit::float::FloatModel;
    use mpcvit_core::model::Tensor;
    let d = tmpdir("huge-weights");
    let ok = d.join("ok.mpcvit");
    tiny_model(&ok);
    let mut fm = FloatModel::load(&ok).expect("load");
    // one output column of fc1, about 1e9 per weight: each word fits
    // fixed point (2^46 at f = 16), their products do not fit the ring
    let (at, cols) = (fm.arch.offset(Tensor::Fc1W(0)), fm.arch.mlp);
    for r in 0..fm.arch.dim {
        fm.weights[at + r * cols + 3] = 1e9;
    }
    let huge = d.join("huge.mpcvit");
    fm.save(&huge).expect("save");
    let keys = d.join("keys");
    assert!(
        bin()
            .args(["keygen", "--out", s(&keys)])
            .output()
            .expect("keygen")
            .status
            .success()
    );
    for model in [&ok, &huge] {
        let o = bin()
            .args(["provision", "--model", s(model), "--keys", s(&keys), "--out"])
            .arg(d.join("m.blob"))
            .output()
            .expect("provision");
        let err = String::from_utf8_lossy(&o.stderr);
        if model == &ok {
            assert!(o.status.success(), "{err}");
            continue;
        }
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("Fc1(0)") && err.contains("too large for fixed point"),
            "{err}"
        );
    }
    let o = bin()
        .args([
            "host",
            "--model",
            s(&huge),
            "--keys",
            s(&keys),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--dealer", "127.0.0.1:1"])
        .output()
        .expect("host");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("too large for fixed point"), "{err}");
}
