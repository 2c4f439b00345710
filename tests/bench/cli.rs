//! The benchmarks' command line (after `cargo bench … --`), parsed by hand.

/// The `--flag value` / `--flag=value` pairs of `args`, in order. `--bench`, which
/// `cargo bench` passes, is left out.
pub fn flag_values(
    args: impl IntoIterator<Item = String>,
    usage: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        if flag == "--bench" {
            continue;
        }
        let value = inline
            .or_else(|| args.next())
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value\n{usage}"))?;
        pairs.push((flag, value));
    }
    Ok(pairs)
}

/// A positive number.
pub fn positive(flag: &str, value: &str, usage: &str) -> anyhow::Result<usize> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => anyhow::bail!("{flag}: {value:?} is not a positive number\n{usage}"),
    }
}

/// Comma-separated positive numbers.
pub fn positives(flag: &str, value: &str, usage: &str) -> anyhow::Result<Vec<usize>> {
    value
        .split(',')
        .map(|n| positive(flag, n.trim(), usage))
        .collect()
}
