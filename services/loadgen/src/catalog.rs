//! Users and products with Zipf-like popularity, products grouped in clusters
//! of related items (the structure a recommender should discover).

use rand::Rng;

/// Samples indices 0..n with probability proportional to 1/(i+1)^s.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let mut cdf: Vec<f64> = (0..n)
            .map(|i| {
                total += 1.0 / ((i + 1) as f64).powf(s);
                total
            })
            .collect();
        cdf.iter_mut().for_each(|c| *c /= total);
        Self { cdf }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.gen();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// Who and what the traffic is about.
pub struct Catalog {
    pub products: usize,
    pub cluster_size: usize,
    pub user_activity: Zipf,
    pub product_popularity: Zipf,
    pub within_cluster: Zipf,
}

impl Catalog {
    pub fn new(users: usize, products: usize, cluster_size: usize) -> Self {
        let cluster_size = cluster_size.min(products);
        Self {
            products,
            cluster_size,
            user_activity: Zipf::new(users, 0.8),
            product_popularity: Zipf::new(products, 1.1),
            within_cluster: Zipf::new(cluster_size, 0.9),
        }
    }

    pub fn clusters(&self) -> usize {
        self.products.div_ceil(self.cluster_size)
    }

    /// The cluster a user mostly browses: fixed per user.
    pub fn home_cluster(&self, user: usize) -> usize {
        (user.wrapping_mul(2_654_435_761) >> 7) % self.clusters()
    }

    /// A product from `cluster`, popular ones first.
    pub fn product_in(&self, cluster: usize, rng: &mut impl Rng) -> usize {
        let i = cluster * self.cluster_size + self.within_cluster.sample(rng);
        i.min(self.products - 1)
    }

    /// A fixed price per product, 5.00 to 204.99.
    pub fn price_cents(&self, product: usize) -> u64 {
        500 + (product as u64).wrapping_mul(7_919) % 20_000
    }
}

pub fn user_id(user: usize) -> String {
    format!("u{user}")
}

pub fn product_id(product: usize) -> String {
    format!("p{product}")
}
