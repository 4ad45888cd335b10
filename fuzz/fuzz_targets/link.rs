//! `Link::recv` (header, length bound, CRC, session, sequence) on a byte
//! stream of arbitrary content.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mpcvit_transport::Link;

struct Bytes<'a>(&'a [u8]);

impl embedded_io::ErrorType for Bytes<'_> {
    type Error = core::convert::Infallible;
}

impl embedded_io::Read for Bytes<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

impl embedded_io::Write for Bytes<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut l = Link::new(Bytes(data), 7);
    let mut buf = [0u8; 256];
    for _ in 0..8 {
        if l.recv(&mut buf).is_err() {
            assert!(l.is_poisoned());
            assert!(l.recv(&mut buf).is_err(), "a poisoned link stays poisoned");
            break;
        }
    }
});
