//! Shared by the benchmarks: each writes one `##` section of `docs/PERFORMANCE.md` and
//! keeps the others.

/// Replaces the section starting at `heading` (up to the next `## `) with `section`, or
/// appends it.
pub fn splice(doc: Option<String>, heading: &str, section: &str) -> String {
    let doc = doc.unwrap_or_else(|| {
        "# Performance\n\nMeasured figures, one `##` section per milestone (detection core, agent mode, \
         binary size, ...). Each section says how it was produced; tools that refresh one section keep \
         the others.\n"
            .to_string()
    });
    let start = doc
        .match_indices(heading)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || doc[..i].ends_with('\n'));
    match start {
        Some(i) => {
            let after = i + heading.len();
            let end = doc[after..]
                .match_indices("\n## ")
                .next()
                .map_or(doc.len(), |(j, _)| after + j + 1);
            let mut out = String::with_capacity(doc.len() + section.len());
            out.push_str(&doc[..i]);
            out.push_str(section);
            if end < doc.len() {
                out.push('\n');
            }
            out.push_str(&doc[end..]);
            out
        }
        None => {
            let mut out = doc.trim_end().to_string();
            out.push_str("\n\n");
            out.push_str(section);
            out
        }
    }
}

/// The `###` blocks of a section's text, in order: (heading line, whole block). Text
/// before the first `###` line is dropped.
#[allow(dead_code)]
fn sub_blocks(section: &str) -> Vec<(String, String)> {
    let starts: Vec<usize> = section
        .match_indices("### ")
        .map(|(i, _)| i)
        .filter(|&i| i == 0 || section[..i].ends_with('\n'))
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let e = starts.get(k + 1).copied().unwrap_or(section.len());
            let block = section[s..e].trim_end().to_string();
            let line = block.lines().next().unwrap_or("").trim_end().to_string();
            (line, block)
        })
        .collect()
}

/// Within the `##` section `heading`, replaces the `###` block whose heading line is
/// the first line of `text` with `text`, or adds it; blocks are kept in the order of
/// their heading lines in `order` (others after them, as they were). `intro` replaces
/// whatever the section holds before its first `###` block. Other blocks and other
/// sections are kept.
#[allow(dead_code)]
pub fn splice_sub(
    doc: Option<String>,
    heading: &str,
    intro: &str,
    order: &[&str],
    text: &str,
) -> String {
    let old = doc.as_deref().unwrap_or("");
    let section = old
        .match_indices(heading)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || old[..i].ends_with('\n'))
        .map(|i| {
            let after = i + heading.len();
            let end = old[after..]
                .match_indices("\n## ")
                .next()
                .map_or(old.len(), |(j, _)| after + j + 1);
            &old[after..end]
        })
        .unwrap_or("");
    let mut blocks = sub_blocks(section);
    let sub = text.lines().next().unwrap_or("").trim_end().to_string();
    let new = (sub.clone(), text.trim_end().to_string());
    if let Some(b) = blocks.iter_mut().find(|b| b.0 == sub) {
        *b = new;
    } else {
        blocks.push(new);
    }
    let rank = |line: &str| order.iter().position(|o| *o == line).unwrap_or(order.len());
    blocks.sort_by_key(|b| rank(&b.0));
    let mut out = format!("{heading}\n\n{}\n", intro.trim_end());
    for (_, b) in &blocks {
        out.push('\n');
        out.push_str(b);
        out.push('\n');
    }
    splice(doc, heading, &out)
}
