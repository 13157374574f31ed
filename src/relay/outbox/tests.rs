//! The outbox's bounds, its wake rule and its claims for direct writes.

use super::*;

fn text(n: usize) -> Message {
    Message::text("x".repeat(n))
}

#[tokio::test]
async fn taken_messages_stay_counted_until_written() {
    let (tx, rx) = outbox(10, 3 * cost(100), CancellationToken::new());
    assert!(tx.push(text(100)));
    assert!(tx.push(text(100)));
    let mut batch = VecDeque::new();
    rx.recv_all(&mut batch).await;
    assert_eq!(batch.len(), 2);
    // The writer holds two; one more fits, a fourth does not.
    assert!(tx.push(text(100)));
    assert!(!tx.push(text(100)));
    assert!(rx.closing().is_cancelled());
}

#[tokio::test]
async fn written_messages_free_their_share() {
    let (tx, rx) = outbox(2, 1 << 20, CancellationToken::new());
    assert!(tx.push(text(1)));
    assert!(tx.push(text(1)));
    let mut batch = VecDeque::new();
    rx.recv_all(&mut batch).await;
    rx.written(2, 2);
    batch.clear();
    assert!(tx.push(text(1)));
    assert!(tx.push(text(1)));
    assert!(!rx.closing().is_cancelled());
}

#[tokio::test]
async fn pongs_go_first_one_per_ping_and_past_the_bound_only_the_latest() {
    let (tx, rx) = outbox(10, 1 << 20, CancellationToken::new());
    assert!(tx.push(text(3)));
    rx.pong(Bytes::from_static(b"one"));
    rx.pong(Bytes::from_static(b"two"));
    let mut batch = VecDeque::new();
    rx.recv_all(&mut batch).await;
    assert_eq!(batch[0], Message::Pong(Bytes::from_static(b"one")));
    assert_eq!(batch[1], Message::Pong(Bytes::from_static(b"two")));
    assert_eq!(batch.len(), 3);
    batch.clear();
    for i in 0..=MAX_PENDING_PONGS {
        rx.pong(Bytes::from(i.to_string()));
    }
    rx.recv_all(&mut batch).await;
    let latest = Bytes::from(MAX_PENDING_PONGS.to_string());
    assert_eq!(batch, [Message::Pong(latest)]);
}

/// A socket for direct writes: takes up to `takes` messages a write, answers `sent`, and
/// keeps what it took.
struct FakeSocket {
    takes: usize,
    sent: Sent,
    took: Mutex<Vec<Message>>,
}

impl Direct for FakeSocket {
    fn try_send(&self, batch: &VecDeque<Message>) -> (usize, Sent) {
        if self.sent == Sent::No {
            return (0, Sent::No);
        }
        let n = batch.len().min(self.takes);
        self.took.lock().extend(batch.iter().take(n).cloned());
        (n, self.sent)
    }
}

fn direct(max_messages: usize, takes: usize, sent: Sent) -> (Outbox, OutboxRx, Arc<FakeSocket>) {
    let (tx, rx) = outbox(max_messages, 1 << 20, CancellationToken::new());
    let socket = Arc::new(FakeSocket {
        takes,
        sent,
        took: Mutex::new(Vec::new()),
    });
    rx.attach_direct(socket.clone());
    (tx, rx, socket)
}

fn claim(offer: Offer) -> Claim {
    match offer {
        Offer::Claimed(claim) => claim,
        Offer::Queued => panic!("queued, not claimed"),
        Offer::Refused => panic!("refused"),
    }
}

fn queued(offer: Offer) -> bool {
    matches!(offer, Offer::Queued)
}

#[test]
fn an_idle_writer_is_written_for_and_not_woken() {
    use futures_util::FutureExt;
    let (tx, rx, socket) = direct(10, 32, Sent::All);
    let mut batch = VecDeque::new();
    // Not idle before the writer first waits: queued.
    assert!(queued(tx.offer(&text(1), true)));
    assert!(rx.try_recv_all(&mut batch));
    batch.clear();
    let mut waiting = Box::pin(rx.recv_all(&mut batch));
    assert!((&mut waiting).now_or_never().is_none());
    // Two messages for one claim: one write.
    let claimed = claim(tx.offer(&Message::text("a"), true));
    assert!(queued(tx.offer(&Message::text("b"), true)));
    assert!(
        (&mut waiting).now_or_never().is_none(),
        "claimed: the writer waits"
    );
    claimed.write();
    claim(tx.offer(&Message::text("c"), true)).write();
    // Not when direct writes are not allowed for this one.
    assert!(queued(tx.offer(&text(2), false)));
    assert!((&mut waiting).now_or_never().is_some());
    drop(waiting);
    assert_eq!(batch, [text(2)]);
    assert_eq!(*socket.took.lock(), ["a", "b", "c"].map(Message::text));
}

#[test]
fn what_the_socket_refused_goes_to_the_writer_in_order_with_what_came_after() {
    use futures_util::FutureExt;
    let (tx, rx, socket) = direct(10, 32, Sent::No);
    let mut batch = VecDeque::new();
    let mut waiting = Box::pin(rx.recv_all(&mut batch));
    assert!((&mut waiting).now_or_never().is_none());
    let first = claim(tx.offer(&text(1), true));
    assert!(tx.push(text(2)));
    rx.ping();
    assert!(
        (&mut waiting).now_or_never().is_none(),
        "claimed: the writer waits"
    );
    first.write();
    assert!((&mut waiting).now_or_never().is_some());
    drop(waiting);
    assert_eq!(batch, [Message::Ping(Bytes::new()), text(1), text(2)]);
    assert!(socket.took.lock().is_empty());
}

#[test]
fn a_write_of_part_of_the_queue_leaves_the_rest_and_the_flush_to_the_writer() {
    use futures_util::FutureExt;
    let (tx, rx, socket) = direct(3, 1, Sent::Part);
    let mut batch = VecDeque::new();
    let mut waiting = Box::pin(rx.recv_all(&mut batch));
    assert!((&mut waiting).now_or_never().is_none());
    let claimed = claim(tx.offer(&text(1), true));
    assert!(queued(tx.offer(&text(2), true)));
    assert!(queued(tx.offer(&text(3), true)));
    // Claimed messages count: a bound of three is full.
    assert!(matches!(tx.offer(&text(4), true), Offer::Refused));
    assert!(rx.closing().is_cancelled());
    claimed.write();
    assert_eq!(
        (&mut waiting).now_or_never(),
        Some(true),
        "the writer must flush"
    );
    drop(waiting);
    assert_eq!(batch, [text(2), text(3)]);
    assert_eq!(*socket.took.lock(), [text(1)]);
    // The one written no longer counts: room for one more.
    assert!(tx.push(text(5)));
}

#[test]
fn a_claim_dropped_unwritten_leaves_its_messages_to_the_writer() {
    use futures_util::FutureExt;
    let (tx, rx, _socket) = direct(10, 32, Sent::All);
    let mut batch = VecDeque::new();
    let mut waiting = Box::pin(rx.recv_all(&mut batch));
    assert!((&mut waiting).now_or_never().is_none());
    drop(claim(tx.offer(&text(1), true)));
    assert!((&mut waiting).now_or_never().is_some());
    drop(waiting);
    assert_eq!(batch, [text(1)]);
}

#[test]
fn ending_direct_writes_waits_for_the_claim_and_drops_the_socket() {
    use futures_util::FutureExt;
    let (tx, rx, socket) = direct(10, 32, Sent::All);
    let mut batch = VecDeque::new();
    assert!(rx.recv_all(&mut batch).now_or_never().is_none());
    let claimed = claim(tx.offer(&text(1), true));
    let mut ending = Box::pin(rx.end_direct());
    assert!((&mut ending).now_or_never().is_none(), "a claim is out");
    claimed.write();
    assert!((&mut ending).now_or_never().is_some());
    assert_eq!(
        Arc::strong_count(&socket),
        1,
        "the socket handle is dropped"
    );
    assert!(queued(tx.offer(&text(2), true)));
    assert_eq!(socket.took.lock().len(), 1);
}

#[test]
fn an_empty_queue_takes_one_message_of_the_byte_bound() {
    let (tx, rx) = outbox(10, 100, CancellationToken::new());
    assert!(tx.push(text(100)));
    assert!(!tx.push(text(1)));
    assert!(rx.closing().is_cancelled());
}

#[test]
fn discard_frees_the_queue() {
    let (tx, rx) = outbox(2, 1 << 20, CancellationToken::new());
    assert!(tx.push(text(5)));
    assert!(tx.push(text(5)));
    assert_eq!(rx.discard(), 2);
    assert!(tx.push(text(5)));
    assert!(!rx.closing().is_cancelled());
}
