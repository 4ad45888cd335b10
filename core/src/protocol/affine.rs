//! Local (communication-free) affine operations on shares.
//!
//! Public constants are added by the host only; multiplication by a public
//! integer is done by both parties on their own shares. A fixed-point public
//! factor multiplies at the product scale and needs a truncation after.

use crate::corr::Role;
use crate::error::ProtocolError;

/// `x += c` for a public constant `c` (only the host's share changes).
pub fn add_public(role: Role, x: &mut [u64], c: u64) {
    if role == Role::Host {
        for v in x {
            *v = v.wrapping_add(c);
        }
    }
}

/// `x[i][j] += bias[j]` for a public row vector (host only), `x` row-major
/// with `bias.len()` columns.
pub fn add_bias(role: Role, x: &mut [u64], bias: &[u64]) -> Result<(), ProtocolError> {
    if bias.is_empty() || !x.len().is_multiple_of(bias.len()) {
        return Err(ProtocolError::BadBuffer);
    }
    if role == Role::Host {
        for row in x.chunks_exact_mut(bias.len()) {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v = v.wrapping_add(b);
            }
        }
    }
    Ok(())
}

/// `x *= c` for a public ring element `c` (both parties).
pub fn mul_public(x: &mut [u64], c: u64) {
    for v in x {
        *v = v.wrapping_mul(c);
    }
}

/// `x += y` for two shared vectors (both parties).
pub fn add(x: &mut [u64], y: &[u64]) -> Result<(), ProtocolError> {
    if x.len() != y.len() {
        return Err(ProtocolError::BadBuffer);
    }
    for (a, &b) in x.iter_mut().zip(y) {
        *a = a.wrapping_add(b);
    }
    Ok(())
}

/// `x -= y` for two shared vectors (both parties).
pub fn sub(x: &mut [u64], y: &[u64]) -> Result<(), ProtocolError> {
    if x.len() != y.len() {
        return Err(ProtocolError::BadBuffer);
    }
    for (a, &b) in x.iter_mut().zip(y) {
        *a = a.wrapping_sub(b);
    }
    Ok(())
}
