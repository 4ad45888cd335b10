//! What `bench --plot` and `table --plot` share: point labels placed so
//! that they do not cover each other, and a legend drawn in its own strip
//! below the panels, where it cannot cover a point.

use plotters::coord::Shift;
use plotters::prelude::*;

/// The smallest and largest of `values` (`(f64::MAX, f64::MIN)` if none).
pub fn extent(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)))
}

/// Font size of point labels (pixels).
pub const LABEL_SIZE: u32 = 12;

/// Approximate pixel box of a label at `size` (sans-serif: about 0.6 em
/// per character).
fn label_box(text: &str, at: (i32, i32), size: u32) -> (i32, i32, i32, i32) {
    let w = (text.chars().count() as f64 * 0.6 * size as f64).ceil() as i32;
    let h = size as i32;
    (at.0, at.1, at.0 + w, at.1 + h)
}

fn overlaps(a: (i32, i32, i32, i32), b: (i32, i32, i32, i32)) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

/// Offsets (from each point, pixels, to the label's top-left corner) for
/// labels of the points at `px`: greedily, in order, the first of eight
/// positions around the point whose box neither overlaps an earlier label
/// nor another point's marker (radius `r`), else the one that overlaps
/// least. `area` is the plotting area's pixel range, which a label should
/// stay inside.
pub fn place_labels(px: &[(i32, i32)], labels: &[String], r: i32, area: (i32, i32, i32, i32)) -> Vec<(i32, i32)> {
    let s = LABEL_SIZE as i32;
    let mut placed: Vec<(i32, i32, i32, i32)> = Vec::new();
    let mut out = Vec::with_capacity(px.len());
    for (k, (&p, text)) in px.iter().zip(labels).enumerate() {
        let w = label_box(text, (0, 0), LABEL_SIZE).2;
        let candidates = [
            (r + 2, -s - 2),
            (r + 2, 2),
            (-w - r - 2, -s - 2),
            (-w - r - 2, 2),
            (-w / 2, -s - r - 3),
            (-w / 2, r + 3),
            (r + 2, -s / 2),
            (-w - r - 2, -s / 2),
        ];
        let cost = |o: (i32, i32)| {
            let b = label_box(text, (p.0 + o.0, p.1 + o.1), LABEL_SIZE);
            let labels_hit = placed.iter().filter(|&&q| overlaps(b, q)).count();
            let points_hit = px
                .iter()
                .enumerate()
                .filter(|&(j, &q)| j != k && overlaps(b, (q.0 - r, q.1 - r, q.0 + r, q.1 + r)))
                .count();
            let outside = b.0 < area.0 || b.1 < area.1 || b.2 > area.2 || b.3 > area.3;
            4 * labels_hit + 2 * points_hit + usize::from(outside)
        };
        let best = candidates
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|&(i, o)| (cost(o), i))
            .map_or(candidates[0], |(_, o)| o);
        placed.push(label_box(text, (p.0 + best.0, p.1 + best.1), LABEL_SIZE));
        out.push(best);
    }
    out
}

/// A legend entry: a marker drawn at a pixel position, and its text.
pub type Marker = Box<dyn Fn(&DrawingArea<SVGBackend<'_>, Shift>, (i32, i32)) -> Result<(), String>>;

/// Draws `entries` in one row across `area`, each a marker and its text.
pub fn legend_row(area: &DrawingArea<SVGBackend<'_>, Shift>, entries: &[(Marker, String)]) -> Result<(), String> {
    let (w, h) = area.dim_in_pixel();
    let widths: Vec<i32> = entries
        .iter()
        .map(|(_, t)| 28 + label_box(t, (0, 0), 13).2 + 24)
        .collect();
    let total: i32 = widths.iter().sum();
    let mut x = ((w as i32 - total) / 2).max(4);
    let y = h as i32 / 2;
    for ((marker, text), wd) in entries.iter().zip(widths) {
        marker(area, (x + 10, y))?;
        area.draw(&Text::new(
            text.clone(),
            (x + 24, y - 7),
            ("sans-serif", 13).into_font().color(&BLACK),
        ))
        .map_err(|e| e.to_string())?;
        x += wd;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points on top of each other get labels that do not overlap (the
    /// first four positions are tried before any overlap is accepted).
    #[test]
    fn labels_of_coincident_points_do_not_overlap() {
        let px = vec![(100, 100); 4];
        let labels: Vec<String> = ["teacher", "RSAttn", "mu 0.7", "mu 0.5"].map(String::from).to_vec();
        let off = place_labels(&px, &labels, 5, (0, 0, 400, 400));
        let boxes: Vec<_> = off
            .iter()
            .zip(&labels)
            .map(|(o, t)| label_box(t, (100 + o.0, 100 + o.1), LABEL_SIZE))
            .collect();
        for i in 0..boxes.len() {
            for j in i + 1..boxes.len() {
                assert!(!overlaps(boxes[i], boxes[j]), "{i} {j}: {boxes:?}");
            }
        }
    }
}
