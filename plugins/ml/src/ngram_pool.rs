//! The n-grams a `TfIdfVectorizer` counts, read in place from its attributes: `pool_int64s`
//! holds the n-grams grouped by length (1-grams first), `ngram_counts[k]` is where the
//! (k+1)-grams start, and n-gram number `i` (counted across the groups) is counted at output
//! coordinate `ngram_indexes[i]`.

use opal_kernel_support::check::error;

const OP: &str = "TfIdfVectorizer";

/// The pool of n-grams of one node.
#[derive(Debug)]
pub(crate) struct NgramPool<'a> {
    pool: &'a [i64],
    counts: &'a [i64],
    indexes: &'a [i64],
}

impl<'a> NgramPool<'a> {
    /// The pool; an error if the groups do not fit the pool or an n-gram has no output index.
    pub(crate) fn new(
        pool: &'a [i64],
        counts: &'a [i64],
        indexes: &'a [i64],
    ) -> opal_plugin_api::KernelResult<Self> {
        let mut previous = 0;
        for (k, &start) in counts.iter().enumerate() {
            if start < previous || start as u64 > pool.len() as u64 {
                return Err(error(
                    OP,
                    format_args!(
                        "ngram_counts[{k}] is {start}: the group starts must rise and lie within the {} values of pool_int64s",
                        pool.len()
                    ),
                ));
            }
            previous = start;
        }
        if let Some(i) = indexes.iter().position(|&i| i < 0) {
            return Err(error(
                OP,
                format_args!("ngram_indexes[{i}] is negative ({})", indexes[i]),
            ));
        }
        let pool = NgramPool {
            pool,
            counts,
            indexes,
        };
        let total: usize = (1..=counts.len()).map(|n| pool.group(n).len() / n).sum();
        if total > indexes.len() {
            return Err(error(
                OP,
                format_args!(
                    "the pool holds {total} n-grams but ngram_indexes gives output coordinates for {}",
                    indexes.len()
                ),
            ));
        }
        Ok(pool)
    }

    /// The length of each output row: one more than the largest output coordinate.
    pub(crate) fn output_size(&self) -> usize {
        self.indexes.iter().max().map_or(0, |&m| m as usize + 1)
    }

    /// The longest n-grams the pool has a group for.
    pub(crate) fn longest(&self) -> usize {
        self.counts.len()
    }

    /// The values of the group of `n`-grams.
    fn group(&self, n: usize) -> &'a [i64] {
        let start = self.counts[n - 1] as usize;
        let end = self
            .counts
            .get(n)
            .map_or(self.pool.len(), |&end| end as usize);
        &self.pool[start..end]
    }

    /// How many n-grams come before the group of `n`-grams.
    fn first_id(&self, n: usize) -> usize {
        (1..n).map(|k| self.group(k).len() / k).sum()
    }

    /// The output coordinate of the `n`-gram whose `j`-th token is `token(j)`, if the pool has
    /// it. When the pool repeats an n-gram its last occurrence counts, as in the reference.
    pub(crate) fn find(&self, n: usize, token: impl Fn(usize) -> i64) -> Option<usize> {
        let position = self
            .group(n)
            .chunks_exact(n)
            .rposition(|gram| gram.iter().enumerate().all(|(j, &v)| v == token(j)))?;
        Some(self.indexes[self.first_id(n) + position] as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_ngram_at_its_output_coordinate() {
        // 1-grams 2, 3, 5, 4; 2-grams (5,6), (7,8), (6,7).
        let pool = [2, 3, 5, 4, 5, 6, 7, 8, 6, 7];
        let indexes = [6, 5, 4, 3, 2, 1, 0];
        let p = NgramPool::new(&pool, &[0, 4], &indexes).unwrap();
        assert_eq!((p.output_size(), p.longest()), (7, 2));
        assert_eq!(p.find(1, |_| 5), Some(4));
        assert_eq!(p.find(1, |_| 9), None);
        let gram = [6, 7];
        assert_eq!(p.find(2, |j| gram[j]), Some(0));
        let gram = [7, 6];
        assert_eq!(p.find(2, |j| gram[j]), None);
    }

    #[test]
    fn inconsistent_pools_are_refused() {
        let pool = [1, 2, 3];
        let err = NgramPool::new(&pool, &[0, 5], &[0, 1, 2]).unwrap_err();
        assert!(err.message().contains("ngram_counts[1] is 5"), "{err}");
        let err = NgramPool::new(&pool, &[0], &[0, 1]).unwrap_err();
        assert!(err.message().contains("holds 3 n-grams"), "{err}");
        let err = NgramPool::new(&pool, &[0], &[0, -1, 2]).unwrap_err();
        assert!(
            err.message().contains("ngram_indexes[1] is negative"),
            "{err}"
        );
    }
}
