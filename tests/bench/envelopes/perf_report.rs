//! Reading `perf report --stdio` output: the sample count, self time grouped by area, and
//! inclusive time per (shortened) symbol.

use std::collections::BTreeMap;

/// Areas and functions below this share (%) are left out.
const MIN_SHARE: f64 = 1.0;

/// `# Samples: 4K of event 'cpu-clock'` → 4000.
pub fn sample_count(report: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix("# Samples: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| {
            let (digits, scale) = match n.strip_suffix('K') {
                Some(d) => (d, 1000.0),
                None => match n.strip_suffix('M') {
                    Some(d) => (d, 1e6),
                    None => (n, 1.0),
                },
            };
            digits.parse::<f64>().ok().map(|v| (v * scale) as u64)
        })
        .unwrap_or(0)
}

/// Self time grouped by area, from `--no-children --sort dso,sym` lines such as
/// `  3.21%  steeple  [.] h2::proto::…` or `  1.00%  [kernel.kallsyms]  [k] …`.
pub fn areas(report: &str) -> Vec<(String, f64)> {
    let mut by_area: BTreeMap<String, f64> = BTreeMap::new();
    for line in report.lines().filter(|l| !l.starts_with('#')) {
        let mut fields = line.split_whitespace();
        let (Some(pct), Some(dso), Some(kind)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some(pct) = pct.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()) else {
            continue;
        };
        let symbol = fields.collect::<Vec<_>>().join(" ");
        *by_area.entry(area(dso, kind, &symbol)).or_default() += pct;
    }
    largest_first(by_area.into_iter().filter(|(_, p)| *p >= MIN_SHARE))
}

/// The area a sample belongs to.
fn area(dso: &str, kind: &str, symbol: &str) -> String {
    if kind == "[k]" || dso.starts_with("[kernel") {
        return "kernel (syscalls, Unix sockets, scheduler, /proc)".to_owned();
    }
    if dso.starts_with("libc") || dso.starts_with("ld-linux") {
        return "libc (malloc/free, memcpy)".to_owned();
    }
    let path = symbol.trim_start_matches(['<', '_']);
    match path.split_once("::") {
        Some((krate, _)) if !krate.contains(' ') => match krate {
            "core" | "alloc" | "std" => "Rust std (core/alloc/std)".to_owned(),
            krate => krate.to_owned(),
        },
        _ => format!("other ({dso})"),
    }
}

/// Inclusive time of every function, shortened, from `--children --sort sym` lines such
/// as `  40.00%  0.10%  [.] steeple::sds::…`, largest first, each name once (an inlined
/// copy counts under its function's name); shares under [`MIN_SHARE`] are left out.
pub fn inclusive(report: &str) -> Vec<(String, f64)> {
    let mut functions: Vec<(String, f64)> = Vec::new();
    for line in report.lines().filter(|l| !l.starts_with('#')) {
        let mut fields = line.split_whitespace();
        let (Some(children), Some(_self), Some(_kind)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let symbol = fields.collect::<Vec<_>>().join(" ");
        let Some(pct) = children
            .strip_suffix('%')
            .and_then(|p| p.parse::<f64>().ok())
        else {
            continue;
        };
        let name = shorten(symbol.trim_end_matches(" (inlined)"));
        let fresh = !functions.iter().any(|(n, _)| *n == name);
        if fresh && pct >= MIN_SHARE {
            functions.push((name, pct));
        }
    }
    functions
}

/// A readable symbol: `<Type as Trait>::f` becomes `Type::f`, generic arguments and
/// `{{closure}}` go.
fn shorten(symbol: &str) -> String {
    let symbol = symbol.replace("::{{closure}}", "");
    let qualified = symbol.strip_prefix('<').and_then(|inner| {
        let (ty, rest) = split_at_depth(inner, " as ")?;
        let (_, after) = split_at_depth(rest, ">")?;
        Some(format!("{ty}{after}"))
    });
    let mut out = String::new();
    let mut depth = 0usize;
    for c in qualified.as_deref().unwrap_or(&symbol).chars() {
        match c {
            '<' => depth += 1,
            '>' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Splits `text` at the first `pattern` outside angle brackets.
fn split_at_depth<'a>(text: &'a str, pattern: &str) -> Option<(&'a str, &'a str)> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        if depth == 0 && text[i..].starts_with(pattern) {
            return Some((&text[..i], &text[i + pattern.len()..]));
        }
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

fn largest_first(items: impl Iterator<Item = (String, f64)>) -> Vec<(String, f64)> {
    let mut items: Vec<_> = items.collect();
    items.sort_by(|a, b| b.1.total_cmp(&a.1));
    items
}
