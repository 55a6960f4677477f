//! Deterministic, realistic traffic for demos, tests and benchmarks: users
//! browsing clustered products through a funnel (view, click, add to cart,
//! purchase), user updates, and web-server access-log lines. The same seed
//! and options give the same lines, byte for byte.

pub mod access_log;
pub mod catalog;
pub mod register;
pub mod sessions;
pub mod sink;

use anyhow::Context;
use chrono::{DateTime, Utc};
use shared::event::Event;

/// What shapes the generated traffic.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub lines: u64,
    pub users: usize,
    pub products: usize,
    pub cluster_size: usize,
    /// Event times are spread evenly over this many days from `start`.
    pub days: u32,
    pub start: DateTime<Utc>,
    /// Stamp each line with the time it is generated instead.
    pub realtime: bool,
}

impl Options {
    fn parts(&self) -> anyhow::Result<(catalog::Catalog, sessions::Clock)> {
        anyhow::ensure!(
            self.users > 0 && self.products > 0 && self.cluster_size > 0,
            "users, products and cluster size must be positive"
        );
        let catalog = catalog::Catalog::new(self.users, self.products, self.cluster_size);
        let span_secs = f64::from(self.days) * 86_400.0;
        let step_ms = (span_secs * 1000.0 / self.lines.max(1) as f64).max(0.0);
        let clock = sessions::Clock {
            start: self.start,
            step_ms,
            realtime: self.realtime,
        };
        Ok((catalog, clock))
    }

    /// Event-envelope lines (interactions and user updates), keyed by entity.
    pub fn events(&self) -> anyhow::Result<impl Iterator<Item = sink::Line> + Send> {
        Ok(self.sessions()?.map(|e| line(&e)))
    }

    /// The events of [`Options::events`], typed.
    pub fn sessions(&self) -> anyhow::Result<impl Iterator<Item = Event> + Send> {
        let (catalog, clock) = self.parts()?;
        Ok(sessions::Sessions::new(self.seed, catalog, clock).take(self.lines as usize))
    }

    /// Combined Log Format lines, unkeyed (as a log shipper sends them).
    pub fn access_log(&self) -> anyhow::Result<impl Iterator<Item = sink::Line> + Send> {
        let (catalog, clock) = self.parts()?;
        Ok(access_log::AccessLog::new(self.seed, catalog, clock)
            .take(self.lines as usize)
            .map(|line| sink::Line {
                key: None,
                payload: line.into_bytes(),
                ts: None,
            }))
    }
}

/// An event as a line: keyed by its entity, stamped with its time.
pub fn line(event: &Event) -> sink::Line {
    sink::Line {
        key: Some(event.key().to_owned()),
        payload: event.to_json(),
        ts: event.ts,
    }
}

/// The events of an NDJSON file, each keyed by its entity and stamped with
/// its `ts`; a line that is not a valid event is an error naming the line.
pub fn from_file(path: &std::path::Path) -> anyhow::Result<Vec<sink::Line>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let event = Event::parse_str(line)
                .with_context(|| format!("{} line {}", path.display(), i + 1))?;
            Ok(sink::Line {
                key: Some(event.key().to_owned()),
                payload: line.as_bytes().to_vec(),
                ts: event.ts,
            })
        })
        .collect()
}
