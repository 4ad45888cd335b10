//! The device party as firmware on QEMU's mps2-an386 (Cortex-M4F): one whole
//! private inference of the bundled model with host and dealer on the
//! desktop. The firmware's prediction equals the desktop device's for the
//! same image. Needs `qemu-system-arm` (`.ci/run` installs it): without it
//! this test fails, it does not skip.

use std::process::Command;

#[test]
fn qemu_device_runs_the_bundled_model() {
    let have_qemu = Command::new("qemu-system-arm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have_qemu,
        "qemu-system-arm is missing: install it with `apt-get install --no-install-recommends qemu-system-arm` (.ci/run does)"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_mpcvit"))
        .args(["demo", "--device", "qemu", "--images", "1", "--timeout", "900"])
        .output()
        .expect("run the demo");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "demo failed:\n{out}\n{err}");
    let line = out
        .lines()
        .find(|l| l.contains("qemu mps2-an386 device:"))
        .unwrap_or_else(|| panic!("no QEMU result in:\n{out}"));
    assert!(line.contains("(desktop device: same prediction;"), "{line}");
    assert!(out.contains("secure = fixed-point plaintext on 1/1 images"), "{out}");
    for figure in [
        "RAM: static",
        "stack high-water",
        "flash:",
        "instructions per inference",
        "UART bytes",
    ] {
        assert!(out.contains(figure), "missing {figure:?} in:\n{out}");
    }
    println!("{out}");
}
