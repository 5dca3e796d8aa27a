//! Group commit, as every sequencer here does it (audit's log, the outbox,
//! records' creates): wait for one request, then take whatever else has
//! queued meanwhile, up to a bound, and write them all in one transaction.

use tokio::sync::mpsc;

/// The next group from `queue`: waits for a first request, then takes those
/// already queued while the group weighs less than `max` (each weighs
/// `weight` of it; a group may end one request over). `None` once the
/// queue is closed and empty.
pub async fn next_group<T>(
    queue: &mut mpsc::Receiver<T>,
    max: usize,
    weight: impl Fn(&T) -> usize,
) -> Option<Vec<T>> {
    let first = queue.recv().await?;
    let mut total = weight(&first);
    let mut group = vec![first];
    while total < max {
        match queue.try_recv() {
            Ok(next) => {
                total += weight(&next);
                group.push(next);
            }
            Err(_) => break,
        }
    }
    Some(group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_group_is_what_has_queued_up_to_its_bound() {
        let (send, mut queue) = mpsc::channel(16);
        for n in [1, 2, 3, 4, 5] {
            send.send(n).await.expect("send");
        }
        // Weighed by value: 1 + 2 + 3 reaches 6.
        assert_eq!(next_group(&mut queue, 6, |n| *n).await, Some(vec![1, 2, 3]));
        assert_eq!(next_group(&mut queue, 100, |_| 1).await, Some(vec![4, 5]));
        drop(send);
        assert_eq!(next_group(&mut queue, 100, |_| 1).await, None);
    }
}
