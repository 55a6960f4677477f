//! Web-server access-log lines in Combined Log Format, as a log shipper would
//! send them: the input of the MapReduce page count.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::catalog::{product_id, Catalog, Zipf};
use crate::sessions::Clock;

const STATIC_PAGES: [&str; 6] = ["/", "/search", "/cart", "/checkout", "/account", "/help"];
const AGENTS: [&str; 3] = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/126.0 Mobile Safari/537.36",
];

/// An endless, deterministic stream of access-log lines.
pub struct AccessLog {
    rng: ChaCha8Rng,
    catalog: Catalog,
    pages: Zipf,
    clock: Clock,
    emitted: u64,
}

impl AccessLog {
    pub fn new(seed: u64, catalog: Catalog, clock: Clock) -> Self {
        let pages = Zipf::new(STATIC_PAGES.len() + catalog.products, 1.0);
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            catalog,
            pages,
            clock,
            emitted: 0,
        }
    }
}

impl Iterator for AccessLog {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let page = self.pages.sample(&mut self.rng);
        let path = match STATIC_PAGES.get(page) {
            Some(p) => (*p).to_owned(),
            None => format!("/products/{}", product_id(page - STATIC_PAGES.len())),
        };
        let (status, bytes) = match self.rng.gen_range(0..100) {
            0 => (404, 512),
            1..=5 => (304, 0),
            _ => (200, self.rng.gen_range(1_000..60_000)),
        };
        // TEST-NET-1 documentation addresses: these are text, never contacted.
        let client = self.rng.gen_range(1..255);
        let user = self.catalog.user_activity.sample(&mut self.rng);
        let agent = AGENTS[user % AGENTS.len()];
        let ts = self.clock.at(self.emitted).format("%d/%b/%Y:%H:%M:%S %z");
        self.emitted += 1;
        Some(format!(
            "192.0.2.{client} - u{user} [{ts}] \"GET {path} HTTP/1.1\" {status} {bytes} \"-\" \"{agent}\""
        ))
    }
}
