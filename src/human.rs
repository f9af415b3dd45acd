//! Byte counts written for people, the same in the CLI's listings and on the console's pages.

/// `512 B`, `1.5 KiB`, `5.0 MiB`: binary units, one decimal above bytes.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::size;

    #[test]
    fn sizes_in_words() {
        let check = |bytes: u64, expected: &str| assert_eq!(size(bytes), expected, "{bytes}");
        check(0, "0 B");
        check(1023, "1023 B");
        check(1536, "1.5 KiB");
        check(5 << 20, "5.0 MiB");
        check(u64::MAX, "16777216.0 TiB");
    }
}
