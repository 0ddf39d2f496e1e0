//! The delaying relay over real loopback sockets: data intact, half-closes, the delay
//! and its jitter.

use super::*;
use crate::common::eventually;
use rand::{RngCore as _, SeedableRng as _};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

/// Generous bound for anything a loaded two-core machine adds to a relayed exchange.
const SLACK: Duration = Duration::from_millis(150);

/// How long a test client waits for one read before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A server on loopback that runs `handle` on each connection, on a thread of its own.
fn server(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind(loopback()).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handle = handle.clone();
            std::thread::spawn(move || handle(stream));
        }
    });
    addr
}

/// Echoes every byte back, and half-closes after the client does.
fn echo_server() -> SocketAddr {
    server(|mut stream| {
        let _ = stream.set_nodelay(true);
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    let _ = stream.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => {
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    })
}

fn connect(relay: &RelayHandle) -> TcpStream {
    let stream = TcpStream::connect(relay.local_addr()).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
}

/// One byte there and back: the round trip.
fn ping(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    stream.write_all(b"p").unwrap();
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).unwrap();
    started.elapsed()
}

/// Whether `result` (of a read) is the failure a reset causes.
fn is_reset<T>(result: &std::io::Result<T>) -> bool {
    matches!(result, Err(e) if e.kind() == ErrorKind::ConnectionReset)
}

#[test]
fn megabytes_in_random_chunks_arrive_intact_in_both_directions() {
    let upstream = echo_server();
    let link = Link::delayed(Duration::from_millis(5)).with_jitter(Duration::from_millis(5));
    let relay = Relay::spawn(loopback(), upstream, link).unwrap();
    let mut data = vec![0u8; 4 << 20];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    rng.fill_bytes(&mut data);
    let mut stream = connect(&relay);
    let sender = {
        let mut stream = stream.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(8);
            let mut sent = 0;
            while sent < data.len() {
                let n = rng.random_range(1..=100_000).min(data.len() - sent);
                stream.write_all(&data[sent..sent + n]).unwrap();
                sent += n;
            }
            stream.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut echoed = Vec::with_capacity(data.len());
    stream.read_to_end(&mut echoed).unwrap();
    sender.join().unwrap();
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "the echoed bytes differ from the sent ones");
}

#[test]
fn a_half_close_arrives_after_the_delayed_data_and_the_other_way_keeps_flowing() {
    let delay = Duration::from_millis(40);
    let (seen, observations) = std_mpsc::channel();
    // Reads to end of stream, reports what it read and when, then answers and closes.
    let upstream = server(move |mut stream| {
        let mut received = Vec::new();
        let result = stream.read_to_end(&mut received);
        let _ = seen.send((received, result.is_ok(), Instant::now()));
        let _ = stream.write_all(b"answer after your end of stream");
    });
    let relay = Relay::spawn(loopback(), upstream, Link::delayed(delay)).unwrap();
    let mut stream = connect(&relay);
    stream.write_all(b"question").unwrap();
    let half_closed = Instant::now();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "answer after your end of stream");
    let (received, clean, eof_at) = observations.recv_timeout(READ_TIMEOUT).unwrap();
    assert_eq!(received, b"question");
    assert!(clean, "the server saw an error instead of end of stream");
    let eof_after = eof_at - half_closed;
    assert!(
        eof_after >= delay,
        "end of stream arrived after {eof_after:?}"
    );
}

#[test]
fn a_round_trip_costs_twice_the_one_way_delay() {
    let delay = Duration::from_millis(40);
    let relay = Relay::spawn(loopback(), echo_server(), Link::delayed(delay)).unwrap();
    let mut stream = connect(&relay);
    for _ in 0..5 {
        let rtt = ping(&mut stream);
        assert!(rtt >= 2 * delay, "round trip {rtt:?} below 2 x {delay:?}");
        assert!(rtt < 2 * delay + SLACK, "round trip {rtt:?}");
    }
}

#[test]
fn the_delay_can_be_changed_while_connections_are_open() {
    let relay = Relay::spawn(loopback(), echo_server(), Link::default()).unwrap();
    let mut stream = connect(&relay);
    let fast = ping(&mut stream);
    assert!(fast < SLACK, "round trip without delay {fast:?}");
    let delay = Duration::from_millis(60);
    relay.set(Link::delayed(delay));
    assert_eq!(relay.link(), Link::delayed(delay));
    let slow = ping(&mut stream);
    assert!(slow >= 2 * delay && slow < 2 * delay + SLACK, "{slow:?}");
    relay.set(Link::default());
    let fast_again = ping(&mut stream);
    assert!(fast_again < SLACK, "{fast_again:?}");
}

#[test]
fn jitter_never_reorders_bytes() {
    let link = Link::delayed(Duration::from_millis(1)).with_jitter(Duration::from_millis(30));
    let relay = Relay::spawn(loopback(), echo_server(), link).unwrap();
    let mut stream = connect(&relay);
    const COUNT: u32 = 400;
    let relay = Arc::new(relay);
    let sender = {
        let mut stream = stream.try_clone().unwrap();
        let relay = relay.clone();
        std::thread::spawn(move || {
            for i in 0..u64::from(COUNT) {
                stream.write_all(&(i as u32).to_be_bytes()).unwrap();
                // Each number is its own chunk with its own jitter draw: the next is sent
                // only once the relay has read this one.
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while relay.stats().client_chunks <= i {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the relay did not read number {i} within 5 s"
                    );
                    std::thread::yield_now();
                }
            }
            stream.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).unwrap();
    sender.join().unwrap();
    let numbers: Vec<u32> = echoed
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(numbers, (0..COUNT).collect::<Vec<_>>());
}

#[test]
fn due_times_never_decrease_whatever_the_jitter_draws() {
    let start = tokio::time::Instant::now();
    let ms = Duration::from_millis;
    // (delay drawn for this chunk, expected due offset from start) for chunks read at
    // start + 0, 1, 2, 3 ms.
    let cases = [
        (ms(30), ms(30)),
        (ms(5), ms(30)),
        (ms(40), ms(42)),
        (ms(0), ms(42)),
    ];
    let mut last = start;
    for (i, (delay, expected)) in cases.into_iter().enumerate() {
        let due = next_due(start + ms(i as u64), delay, last);
        assert_eq!(due - start, expected, "chunk {i}");
        last = due;
    }
    let link = Link::delayed(ms(10)).with_jitter(ms(5));
    for _ in 0..1000 {
        let d = link.sample_delay();
        assert!(d >= ms(10) && d <= ms(15), "{d:?}");
    }
    assert_eq!(due_after(start, Duration::MAX), start + FAR_FUTURE);
}

#[test]
fn cut_resets_open_connections_and_refuses_new_ones_until_heal() {
    let relay = Relay::spawn(loopback(), echo_server(), Link::default()).unwrap();
    let mut open = connect(&relay);
    ping(&mut open);
    eventually(
        Duration::from_secs(5),
        "the relay counts one open connection",
        || (relay.stats().open == 1).then_some(()).ok_or(relay.stats()),
    );

    relay.cut();
    assert!(relay.link().drop_new_connections);
    let mut byte = [0u8; 1];
    let read = open.read(&mut byte);
    assert!(
        is_reset(&read),
        "the open connection was not reset: {read:?}"
    );

    let mut refused = connect(&relay);
    let read = refused.read(&mut byte);
    assert!(is_reset(&read), "a new connection was not reset: {read:?}");
    eventually(
        Duration::from_secs(5),
        "the relay counts no open connection",
        || {
            let stats = relay.stats();
            (stats.open == 0 && stats.refused == 1)
                .then_some(())
                .ok_or(stats)
        },
    );

    relay.heal();
    let mut healed = connect(&relay);
    let rtt = ping(&mut healed);
    assert!(rtt < SLACK, "{rtt:?}");
    assert_eq!(relay.stats().accepted, 2);
}

#[test]
fn dropping_new_connections_keeps_the_open_ones() {
    let relay = Relay::spawn(loopback(), echo_server(), Link::default()).unwrap();
    let mut open = connect(&relay);
    ping(&mut open);
    relay.set(Link {
        drop_new_connections: true,
        ..Link::default()
    });
    let mut refused = connect(&relay);
    let mut byte = [0u8; 1];
    let read = refused.read(&mut byte);
    assert!(is_reset(&read), "a new connection was not reset: {read:?}");
    ping(&mut open);
    assert_eq!(relay.stats().refused, 1);
}

#[test]
fn an_unreachable_upstream_resets_the_client_a_round_trip_later() {
    // A port that was free a moment ago: connecting to it is refused.
    let closed = TcpListener::bind(loopback()).unwrap().local_addr().unwrap();
    let delay = Duration::from_millis(30);
    let relay = Relay::spawn(loopback(), closed, Link::delayed(delay)).unwrap();
    let started = Instant::now();
    let mut stream = connect(&relay);
    let mut byte = [0u8; 1];
    let read = stream.read(&mut byte);
    let elapsed = started.elapsed();
    assert!(is_reset(&read), "{read:?}");
    assert!(
        elapsed >= 2 * delay && elapsed < 2 * delay + SLACK,
        "{elapsed:?}"
    );
}

#[test]
fn throughput_is_not_limited_by_the_delay() {
    // Counts what it receives until end of stream, then answers with the count.
    let upstream = server(|mut stream| {
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        let _ = stream.write_all(&total.to_be_bytes());
    });
    let delay = Duration::from_millis(100);
    let relay = Relay::spawn(loopback(), upstream, Link::delayed(delay)).unwrap();
    let mut stream = connect(&relay);
    const BYTES: usize = 8 << 20;
    let data = vec![0x5a_u8; BYTES];
    let started = Instant::now();
    stream.write_all(&data).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut count = [0u8; 8];
    stream.read_exact(&mut count).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(u64::from_be_bytes(count), BYTES as u64);
    // One read chunk per round trip would take 8 MiB / 64 KiB x 200 ms = 25.6 s; the
    // queue keeps up to BUFFER_LIMIT in flight, so this takes about 2 x 100 ms plus the
    // copying. 3 s still proves megabytes in flight per round trip.
    assert!(elapsed >= 2 * delay, "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "8 MiB took {elapsed:?}");
    assert!(
        relay.stats().peak_queued > READ_CHUNK,
        "{:?}",
        relay.stats()
    );
}

#[test]
fn a_receiver_that_stops_reading_fills_the_queue_to_its_limit_and_blocks_the_sender() {
    // Accepts and never reads, until told to go away.
    let (release, released) = std_mpsc::channel::<()>();
    let released = Arc::new(Mutex::new(released));
    let upstream = server(move |stream| {
        let _ = released
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(60));
        drop(stream);
    });
    let relay = Relay::spawn(loopback(), upstream, Link::default()).unwrap();
    let stream = connect(&relay);
    const TRY_TO_SEND: usize = 256 << 20;
    let (progress, sent) = std_mpsc::channel::<usize>();
    let sender = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![0u8; 1 << 20];
            let mut total = 0;
            while total < TRY_TO_SEND && stream.write_all(&chunk).is_ok() {
                total += chunk.len();
                let _ = progress.send(total);
            }
            total
        })
    };
    let peak = eventually(
        Duration::from_secs(20),
        "the relay's queue for the stalled receiver is full",
        || {
            let peak = relay.stats().peak_queued;
            (peak > BUFFER_LIMIT - READ_CHUNK)
                .then_some(peak)
                .ok_or(peak)
        },
    );
    assert!(peak <= BUFFER_LIMIT, "{peak} bytes queued");
    // The sender is blocked: it has not got anywhere near what it wanted to send.
    let sent_so_far = sent.try_iter().last().unwrap_or(0);
    assert!(sent_so_far < TRY_TO_SEND / 2, "sent {sent_so_far} bytes");
    assert!(!sender.is_finished(), "the sender was never blocked");
    assert!(relay.stats().peak_queued <= BUFFER_LIMIT);
    // Release everything: dropping the relay resets the connection, which unblocks the
    // sender with an error.
    drop(relay);
    let _ = release.send(());
    let total = sender.join().unwrap();
    assert!(total < TRY_TO_SEND);
    drop(stream);
}

#[test]
fn dropping_the_handle_resets_connections_and_closes_the_port() {
    let upstream = echo_server();
    let relay = Relay::spawn(loopback(), upstream, Link::default()).unwrap();
    assert_eq!(relay.upstream(), upstream);
    let addr = relay.local_addr();
    let mut open = connect(&relay);
    ping(&mut open);
    drop(relay);
    let mut byte = [0u8; 1];
    let read = open.read(&mut byte);
    assert!(is_reset(&read), "{read:?}");
    let refused = TcpStream::connect(addr);
    assert!(
        matches!(&refused, Err(e) if e.kind() == ErrorKind::ConnectionRefused),
        "{refused:?}"
    );
}

#[test]
fn binding_a_taken_address_names_it() {
    let taken = TcpListener::bind(loopback()).unwrap();
    let addr = taken.local_addr().unwrap();
    let error = match Relay::spawn(addr, addr, Link::default()) {
        Ok(_) => panic!("bound {addr} twice"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.starts_with(&format!("binding the relay's listener on {addr}: ")),
        "{error}"
    );
}
