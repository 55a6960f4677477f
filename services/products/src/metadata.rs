//! The metadata branch: the seller's JSON checked field by field and
//! normalised (title and description trimmed with inner whitespace
//! collapsed, the price in the currency's minor units, the currency an ISO
//! 4217 code, categories lower-cased and deduplicated). Every problem is
//! reported with its field, all at once.

use serde::Serialize;
use serde_json::{Map, Value};

const MAX_TITLE_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 5000;
const MAX_CATEGORIES: usize = 10;
const MAX_CATEGORY_CHARS: usize = 64;
/// Prices above this many major units are a typo, not a product.
const MAX_PRICE_MAJOR: u64 = 10_000_000;

/// Active ISO 4217 codes and their minor-unit exponents.
const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYU", 2),
    ("UZS", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// The metadata as the product carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Normalized {
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// In the currency's minor units (cents for EUR, yen for JPY).
    pub price_minor: u64,
    pub currency: String,
    pub categories: Vec<String>,
}

/// One field's problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub field: &'static str,
    pub reason: String,
}

/// Checks and normalises `metadata`; every problem at once when it fails.
pub fn normalize(metadata: &Value) -> Result<Normalized, Vec<Problem>> {
    let empty = Map::new();
    let fields = metadata.as_object().unwrap_or(&empty);
    let mut problems = Vec::new();
    let mut problem = |field, reason: String| problems.push(Problem { field, reason });
    let known = ["title", "description", "price", "currency", "categories"];
    for name in fields.keys().filter(|k| !known.contains(&k.as_str())) {
        problem("metadata", format!("unknown field `{name}`"));
    }

    let title = match fields.get("title") {
        Some(Value::String(t)) => {
            let t = collapse(t);
            if t.is_empty() {
                problem("title", "must not be empty".into());
            } else if t.chars().count() > MAX_TITLE_CHARS {
                problem("title", format!("longer than {MAX_TITLE_CHARS} characters"));
            }
            t
        }
        None | Some(Value::Null) => {
            problem("title", "is required".into());
            String::new()
        }
        Some(_) => {
            problem("title", "must be a string".into());
            String::new()
        }
    };
    let description = match fields.get("description") {
        Some(Value::String(d)) => {
            let d = collapse(d);
            if d.chars().count() > MAX_DESCRIPTION_CHARS {
                problem(
                    "description",
                    format!("longer than {MAX_DESCRIPTION_CHARS} characters"),
                );
            }
            (!d.is_empty()).then_some(d)
        }
        None | Some(Value::Null) => None,
        Some(_) => {
            problem("description", "must be a string".into());
            None
        }
    };
    let currency = match fields.get("currency") {
        Some(Value::String(c)) => {
            let code = c.trim().to_ascii_uppercase();
            match CURRENCIES.iter().find(|(k, _)| *k == code) {
                Some(&(code, exponent)) => Some((code, exponent)),
                None => {
                    problem(
                        "currency",
                        format!("`{c}` is not an ISO 4217 currency code"),
                    );
                    None
                }
            }
        }
        None | Some(Value::Null) => {
            problem("currency", "is required".into());
            None
        }
        Some(_) => {
            problem("currency", "must be a string such as \"EUR\"".into());
            None
        }
    };
    let price = match (fields.get("price"), currency) {
        (None | Some(Value::Null), _) => {
            problem("price", "is required".into());
            None
        }
        (Some(price), Some((_, exponent))) => match minor_units(price, exponent) {
            Ok(minor) => Some(minor),
            Err(reason) => {
                problem("price", reason);
                None
            }
        },
        (Some(_), None) => None, // unknown currency: no exponent to check against
    };
    let mut categories = Vec::new();
    match fields.get("categories") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(c) => {
                        let c = collapse(c).to_lowercase();
                        if c.is_empty() {
                            problem("categories", "an empty category".into());
                        } else if c.chars().count() > MAX_CATEGORY_CHARS {
                            problem(
                                "categories",
                                format!("a category longer than {MAX_CATEGORY_CHARS} characters"),
                            );
                        } else if !categories.contains(&c) {
                            categories.push(c);
                        }
                    }
                    _ => problem("categories", "must be strings".into()),
                }
            }
            if categories.len() > MAX_CATEGORIES {
                problem("categories", format!("more than {MAX_CATEGORIES}"));
            }
        }
        Some(_) => problem("categories", "must be an array of strings".into()),
    }
    if !metadata.is_object() {
        problem("metadata", "must be a JSON object".into());
    }
    match (problems.is_empty(), price, currency) {
        (true, Some(price_minor), Some((code, _))) => Ok(Normalized {
            title,
            description,
            price_minor,
            currency: code.to_owned(),
            categories,
        }),
        _ => Err(problems),
    }
}

/// Trimmed, with every run of whitespace one space.
fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A price (a JSON number or a decimal string such as "19.90") in minor units.
fn minor_units(price: &Value, exponent: u32) -> Result<u64, String> {
    let text = match price {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return Err("must be a number or a decimal string such as \"19.90\"".into()),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !(fraction.is_empty() || digits(fraction)) {
        return Err(format!("`{text}` is not a non-negative decimal amount"));
    }
    if fraction.len() > exponent as usize {
        return Err(format!(
            "`{text}` has more than {exponent} decimal place(s), the currency's minor unit"
        ));
    }
    let whole: u64 = whole
        .parse()
        .ok()
        .filter(|w| *w <= MAX_PRICE_MAJOR)
        .ok_or_else(|| format!("`{text}` is more than {MAX_PRICE_MAJOR}"))?;
    let fraction: u64 = format!("{fraction:0<width$}", width = exponent as usize)
        .parse()
        .unwrap_or(0);
    Ok(whole * 10u64.pow(exponent) + fraction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_good_upload_is_normalised() {
        let n = normalize(&json!({
            "title": "  Desk \t lamp ", "description": "Warm\n\nlight", "price": "19.9",
            "currency": "eur", "categories": ["Home", "home ", "Lighting"]
        }))
        .unwrap();
        assert_eq!(n.title, "Desk lamp");
        assert_eq!(n.description.as_deref(), Some("Warm light"));
        assert_eq!((n.price_minor, n.currency.as_str()), (1990, "EUR"));
        assert_eq!(n.categories, ["home", "lighting"]);
        // Minor units follow the currency: none for yen, three for dinar.
        let yen = normalize(&json!({"title": "t", "price": 500, "currency": "JPY"})).unwrap();
        assert_eq!(yen.price_minor, 500);
        let dinar = normalize(&json!({"title": "t", "price": "1.234", "currency": "KWD"})).unwrap();
        assert_eq!(dinar.price_minor, 1234);
    }

    #[test]
    fn every_problem_is_named_with_its_field() {
        let problems = normalize(&json!({
            "title": " ", "price": "12.345", "currency": "EUR", "categories": "x", "colour": "red"
        }))
        .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            ["metadata", "title", "price", "categories"],
            "{problems:?}"
        );
        let problems =
            normalize(&json!({"title": "t", "price": "-1", "currency": "XYZ"})).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].reason.contains("ISO 4217"));
        let problems =
            normalize(&json!({"title": "t", "price": "-1", "currency": "USD"})).unwrap_err();
        assert_eq!(problems[0].field, "price");
        let problems =
            normalize(&json!({"title": "t", "price": 1e300, "currency": "USD"})).unwrap_err();
        assert_eq!(problems[0].field, "price", "{problems:?}");
        assert!(normalize(&json!({"price": 1, "currency": "USD"})).is_err());
        assert!(normalize(&json!([1])).is_err());
    }
}
