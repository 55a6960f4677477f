//! Numbers as people read them: thousands separators, dollars and cents,
//! percentages and durations. Money is formatted from integer cents, so a
//! total is printed exactly as stored (no float rounding).

/// `1234567` as `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `341981246` cents as `$3,419,812.46`.
pub fn money(cents: u64) -> String {
    format!("${}.{:02}", count(cents / 100), cents % 100)
}

/// A money axis label: whole dollars when the ticks are a dollar or more
/// apart, cents otherwise.
pub fn money_tick(cents: f64, step: f64) -> String {
    let cents = cents.round().max(0.0) as u64;
    if step >= 100.0 {
        format!("${}", count((cents + 50) / 100))
    } else {
        money(cents)
    }
}

/// A count axis label.
pub fn count_tick(value: f64) -> String {
    count(value.round().max(0.0) as u64)
}

/// `0.1234` as `12.3%`.
pub fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// A percentage axis label with as many decimals as the tick step needs.
pub fn percent_tick(ratio: f64, step: f64) -> String {
    let decimals = (-(step * 100.0).log10().floor()).max(0.0) as usize;
    format!("{:.*}%", decimals, ratio * 100.0)
}

/// Seconds as `0.4 s`, `12 s`, `3 min 05 s` or `2 h 03 min`.
pub fn duration(seconds: f64) -> String {
    let seconds = seconds.max(0.0);
    if seconds < 10.0 {
        return format!("{seconds:.1} s");
    }
    let whole = seconds.round() as u64;
    match whole {
        0..=59 => format!("{whole} s"),
        60..=3599 => format!("{} min {:02} s", whole / 60, whole % 60),
        _ => format!("{} h {:02} min", whole / 3600, whole % 3600 / 60),
    }
}

/// The length of an empty stretch, roughly: `36 yr`, `9 mo`, `45 d`.
pub fn span(days: i64) -> String {
    match days {
        730.. => format!("{:.0} yr", days as f64 / 365.25),
        60..=729 => format!("{:.0} mo", days as f64 / 30.44),
        _ => format!("{days} d"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_and_money() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(money(341981246), "$3,419,812.46");
        assert_eq!(money(5), "$0.05");
        assert_eq!(money_tick(250_000.0, 50_000.0), "$2,500");
        assert_eq!(money_tick(50.0, 50.0), "$0.50");
    }

    #[test]
    fn percentages_and_durations() {
        assert_eq!(percent(0.1234), "12.3%");
        assert_eq!(percent_tick(0.15000000000000002, 0.05), "15%");
        assert_eq!(percent_tick(0.004, 0.002), "0.4%");
        assert_eq!(duration(0.42), "0.4 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(7380.0), "2 h 03 min");
        assert_eq!(span(13_300), "36 yr");
        assert_eq!(span(45), "45 d");
    }
}
