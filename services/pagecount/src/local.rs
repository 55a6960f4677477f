//! `pagecount local FILE` / `pagecount local --topic NAME`: the same count
//! in one process with the same parser, no shuffle: the article's baseline
//! for "a distributed job can be slower than one process on small data".

use std::collections::HashMap;
use std::io::BufRead;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use shared::config::KafkaConfig;

use crate::clf;

/// Lines read, rejected, and the count per page.
#[derive(Debug, Default)]
pub struct Counted {
    pub lines: u64,
    pub rejected: u64,
    pub pages: HashMap<String, u64>,
}

impl Counted {
    fn line(&mut self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        self.lines += 1;
        match clf::page(line) {
            Ok(page) => match self.pages.get_mut(page) {
                Some(count) => *count += 1,
                None => {
                    self.pages.insert(page.to_owned(), 1);
                }
            },
            Err(_) => self.rejected += 1,
        }
    }

    /// The top `n` pages, by count then page.
    pub fn top(&self, n: usize) -> Vec<(&str, u64)> {
        let mut pages: Vec<(&str, u64)> =
            self.pages.iter().map(|(p, c)| (p.as_str(), *c)).collect();
        pages.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(a.0)));
        pages.truncate(n);
        pages
    }
}

pub fn count_file(path: &str) -> anyhow::Result<Counted> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut counted = Counted::default();
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line)? > 0 {
        counted.line(&line);
        line.clear();
    }
    Ok(counted)
}

/// Every record of `topic` now (low to high watermark, every partition).
pub fn count_topic(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<Counted> {
    let reader = crate::map::chunk_reader(kafka)?;
    let metadata = reader.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) =
            reader.fetch_watermarks(topic, partition.id(), Duration::from_secs(10))?;
        if high > low {
            assignment.add_partition_offset(topic, partition.id(), Offset::Offset(low))?;
            ends.insert(partition.id(), high);
        }
    }
    reader.assign(&assignment)?;
    let mut counted = Counted::default();
    while !ends.is_empty() {
        match reader.poll(Duration::from_secs(1)) {
            Some(Ok(m)) => {
                for line in m.payload().unwrap_or_default().split(|b| *b == b'\n') {
                    counted.line(line);
                }
                if ends
                    .get(&m.partition())
                    .is_some_and(|end| m.offset() + 1 >= *end)
                {
                    ends.remove(&m.partition());
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ends.remove(&p);
            }
            Some(Err(error)) => return Err(error.into()),
            None => {}
        }
    }
    Ok(counted)
}

/// Runs the local count and prints it.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let counted = match args {
        [flag, topic] if flag == "--topic" => {
            let loaded = shared::config::load()?;
            count_topic(&loaded.settings()?.kafka, topic)?
        }
        [file] => count_file(file)?,
        _ => anyhow::bail!("usage: pagecount local FILE | pagecount local --topic NAME"),
    };
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "lines {} counted {} rejected {} pages {} in {seconds:.2} s ({:.0} lines/s)",
        counted.lines,
        counted.lines - counted.rejected,
        counted.rejected,
        counted.pages.len(),
        counted.lines as f64 / seconds
    );
    for (page, count) in counted.top(10) {
        println!("{count:>10} {page}");
    }
    Ok(())
}
