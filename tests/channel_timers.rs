//! Timer receivers (`after`, `at`, `tick`, `never`): never early, each
//! delivery taken exactly once by one of a receiver's clones (coroutines
//! and OS threads alike), in selects with channels, given back when a
//! selected operation is dropped, and waits that cancellation and runtime
//! shutdown end.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use weft::select;
use weft::sync::channel::{RecvTimeoutError, Select, TryRecvError, after, at, bounded, never, tick, unbounded};
use weft::{CoroutineState, JoinErrorKind, ParkedOn, Runtime};

const LIMIT: Duration = Duration::from_secs(30);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().expect("a runtime with its worker threads")
}

/// Waits until coroutine `id` of `rt` is parked on a channel receive.
#[track_caller]
fn wait_parked_in_recv(rt: &Runtime, id: u64) {
    let started = Instant::now();
    loop {
        if let Some(CoroutineState::Parked { on: ParkedOn::ChannelRecv(_) | ParkedOn::Select(_), .. }) =
            rt.dump().coroutine(id).map(|c| c.state())
        {
            return;
        }
        assert!(started.elapsed() < LIMIT, "coroutine {id} never parked in a receive\n{}", rt.dump());
        thread::sleep(ms(2));
    }
}

#[test]
fn after_delivers_its_instant_once_and_never_early() {
    let rt = runtime(2);
    let in_coroutine = rt.spawn(|| {
        let start = Instant::now();
        // Far enough ahead that a descheduled test thread still looks
        // before it is due.
        let timer = after(ms(300));
        assert_eq!(timer.try_recv(), Err(TryRecvError::Empty));
        assert_eq!((timer.len(), timer.is_empty(), timer.is_full(), timer.capacity()), (0, true, false, Some(1)));
        let due = timer.recv().unwrap();
        assert!(due >= start + ms(300), "delivered {:?} after the start, asked 300 ms", due - start);
        assert!(Instant::now() >= due, "received before it was due");
        // Its one message is gone; it is never disconnected.
        assert_eq!(timer.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(timer.recv_timeout(ms(10)), Err(RecvTimeoutError::Timeout));
        start.elapsed()
    });
    assert!(in_coroutine.join().unwrap() >= ms(310));
    // The same from a plain OS thread (no runtime).
    let start = Instant::now();
    let due = after(ms(20)).recv().unwrap();
    assert!(due >= start + ms(20) && Instant::now() >= due);
}

#[test]
fn at_a_passed_instant_is_ready_at_once_and_at_a_later_one_waits() {
    let past = Instant::now();
    thread::sleep(ms(1));
    let alarm = at(past);
    assert_eq!((alarm.len(), alarm.is_full()), (1, true));
    assert_eq!(alarm.try_recv(), Ok(past));
    let when = Instant::now() + ms(25);
    let handle = weft::spawn(move || at(when).recv().unwrap());
    assert_eq!(handle.join().unwrap(), when);
    assert!(Instant::now() >= when);
    // An instant no clock reaches never comes (and does not overflow).
    let far = after(Duration::MAX);
    assert_eq!(far.recv_timeout(ms(5)), Err(RecvTimeoutError::Timeout));
}

#[test]
fn the_clones_of_an_after_share_its_one_message() {
    // Coroutines (plain receives and selects) and OS threads wait on clones
    // of one `after`; exactly one of them gets its message. Each waits
    // until a deadline well past the timer's, then stops.
    let rt = runtime(2);
    for round in 0..5 {
        let timer = after(ms(5));
        let deadline = Instant::now() + ms(300);
        let got = Arc::new(AtomicUsize::new(0));
        let mut coroutines = Vec::new();
        for i in 0..4 {
            let (timer, got) = (timer.clone(), Arc::clone(&got));
            coroutines.push(rt.spawn(move || {
                let received = if i % 2 == 0 {
                    timer.recv_deadline(deadline).is_ok()
                } else {
                    let mut select = Select::new();
                    select.recv(&timer);
                    match select.select_deadline(deadline) {
                        Ok(operation) => operation.recv(&timer).is_ok(),
                        Err(_) => false,
                    }
                };
                if received {
                    got.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (timer, got) = (timer.clone(), Arc::clone(&got));
                thread::spawn(move || {
                    if timer.recv_deadline(deadline).is_ok() {
                        got.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        coroutines.into_iter().for_each(|c| c.join().unwrap());
        threads.into_iter().for_each(|t| t.join().unwrap());
        let left = usize::from(timer.try_recv().is_ok());
        assert_eq!(got.load(Ordering::SeqCst) + left, 1, "round {round}: one message, received exactly once");
        assert!(timer.same_channel(&timer.clone()) && !timer.same_channel(&after(ms(5))));
    }
}

#[test]
fn ticks_come_on_their_grid_never_early_and_missed_ones_are_dropped() {
    let period = ms(10);
    let start = Instant::now();
    let ticker = tick(period);
    let first = ticker.recv().unwrap();
    assert!(first >= start + period && Instant::now() >= first);
    let mut previous = first;
    for _ in 0..4 {
        let next = ticker.recv().unwrap();
        assert!(Instant::now() >= next, "received before it was due");
        assert!(next > previous && (next - first).as_nanos() % period.as_nanos() == 0, "off the grid: {next:?}");
        previous = next;
    }
    // Miss several ticks: the oldest due one comes at once, then the next
    // is the first grid point after that receive.
    thread::sleep(period * 5);
    let before = Instant::now();
    let late = ticker.try_recv().expect("a tick is due");
    let after_take = Instant::now();
    assert_eq!(late, previous + period, "the oldest due tick");
    // The ticks missed since (previous + 2, ..., + 5 periods, all before
    // `before`) are dropped: the next is the first grid point after the take.
    let next = ticker.recv().unwrap();
    assert!(next > before && next <= after_take + period, "next {next:?}, took between {before:?} and {after_take:?}");
    assert_eq!((next - first).as_nanos() % period.as_nanos(), 0);
}

#[test]
#[should_panic(expected = "the period is zero")]
fn a_ticker_of_zero_period_is_refused_with_a_message() {
    let _ = tick(Duration::ZERO);
}

#[test]
fn the_clones_of_a_ticker_take_each_tick_once() {
    // Three coroutines and a thread share a ticker: together they receive
    // one message per due tick, never two for the same instant.
    let rt = runtime(2);
    // They go on for 200 ms and until 20 ticks came in all (30 s at most,
    // so that descheduled receivers still see some).
    let ticker = tick(ms(2));
    let start = Instant::now();
    let total = Arc::new(AtomicUsize::new(0));
    let more = {
        let total = Arc::clone(&total);
        move || start.elapsed() < ms(200) || (total.load(Ordering::SeqCst) < 20 && start.elapsed() < LIMIT)
    };
    let receivers: Vec<_> = (0..3)
        .map(|_| {
            let (ticker, total, more) = (ticker.clone(), Arc::clone(&total), more.clone());
            rt.spawn(move || {
                let mut got = Vec::new();
                while more() {
                    got.push(ticker.recv().unwrap());
                    total.fetch_add(1, Ordering::SeqCst);
                }
                got
            })
        })
        .collect();
    let (thread_ticker, thread_total) = (ticker.clone(), Arc::clone(&total));
    let thread = thread::spawn(move || {
        let mut got = Vec::new();
        while more() {
            got.push(thread_ticker.recv().unwrap());
            thread_total.fetch_add(1, Ordering::SeqCst);
        }
        got
    });
    let mut all: Vec<Instant> = receivers.into_iter().flat_map(|r| r.join().unwrap()).collect();
    all.extend(thread.join().unwrap());
    let received = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), received, "a tick was received twice");
    assert!(received >= 20, "only {received} ticks");
}

#[test]
fn never_is_never_ready_and_never_disconnected() {
    let nothing = never::<String>();
    assert_eq!(nothing.try_recv(), Err(TryRecvError::Empty));
    assert_eq!((nothing.len(), nothing.is_empty(), nothing.is_full(), nothing.capacity()), (0, true, true, Some(0)));
    let start = Instant::now();
    assert_eq!(nothing.recv_timeout(ms(20)), Err(RecvTimeoutError::Timeout));
    assert!(start.elapsed() >= ms(20));
    assert!(nothing.same_channel(&never()) && !nothing.same_channel(&unbounded().1));
    let mut select = Select::new();
    select.recv(&nothing);
    assert!(select.try_select().is_err());
    assert!(select.select_timeout(ms(10)).is_err());
}

#[test]
fn a_select_wakes_for_its_first_timer_and_not_before() {
    let rt = runtime(1);
    let chosen = rt.spawn(|| {
        let (_tx, idle) = unbounded::<u8>();
        let start = Instant::now();
        let late = after(Duration::from_secs(10));
        let soon = after(ms(25));
        let nothing = never::<u8>();
        let mut select = Select::new();
        select.recv(&idle);
        let late_case = select.recv(&late);
        let soon_case = select.recv(&soon);
        select.recv(&nothing);
        let operation = select.select();
        assert_ne!(operation.index(), late_case);
        assert_eq!(operation.index(), soon_case);
        let due = operation.recv(&soon).unwrap();
        assert!(due >= start + ms(25) && Instant::now() >= due);
        start.elapsed()
    });
    let elapsed = chosen.join().unwrap();
    assert!(elapsed < Duration::from_secs(10), "woke at the late timer ({elapsed:?}), not the first");
}

#[test]
fn a_select_timeout_before_the_timer_times_out_and_after_it_takes_the_timer() {
    let start = Instant::now();
    let timer = after(ms(400)); // far enough ahead for a descheduled thread
    let mut select = Select::new();
    let case = select.recv(&timer);
    assert!(select.select_timeout(ms(10)).is_err());
    assert!(start.elapsed() >= ms(10));
    let operation = select.select_timeout(LIMIT).expect("the timer comes first");
    assert_eq!(operation.index(), case);
    assert!(operation.recv(&timer).unwrap() >= start + ms(400));
    assert!(Instant::now() >= start + ms(400));
}

#[test]
fn a_channel_value_wins_over_a_later_timer() {
    let (tx, rx) = bounded::<u32>(0);
    let sender = weft::spawn(move || {
        weft::sleep(ms(10));
        tx.send(7).unwrap();
    });
    let timeout = after(ms(5_000));
    let start = Instant::now();
    let got = select! {
        recv(rx) -> value => value.unwrap(),
        recv(timeout) -> _ => panic!("the timer came first"),
    };
    assert_eq!(got, 7);
    assert!(start.elapsed() < ms(5_000));
    sender.join().unwrap();
}

#[test]
fn select_macro_takes_receivers_made_in_their_case() {
    let (_tx, rx) = unbounded::<u8>();
    let start = Instant::now();
    let timed_out = select! {
        recv(rx) -> _ => false,
        recv(after(ms(15))) -> due => {
            assert!(due.unwrap() >= start + ms(15));
            true
        }
    };
    assert!(timed_out);
    assert!(start.elapsed() >= ms(15));
    select! {
        recv(never::<u8>()) -> _ => unreachable!(),
        default => {}
    }
}

#[test]
fn a_heartbeat_loop_counts_ticks_between_messages() {
    let rt = runtime(2);
    let (tx, rx) = unbounded::<u32>();
    // The producer sends each value once the consumer has counted two more
    // heartbeats (30 s at most): the beats come between the values however
    // the threads are scheduled.
    let beats = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&beats);
    let producer = rt.spawn(move || {
        for i in 0..5 {
            let started = Instant::now();
            while seen.load(Ordering::SeqCst) < 2 * (i + 1) && started.elapsed() < LIMIT {
                weft::sleep(ms(1));
            }
            tx.send(i as u32).unwrap();
        }
    });
    let consumer = rt.spawn(move || {
        let heartbeat = tick(ms(2));
        let mut values = Vec::new();
        loop {
            select! {
                recv(rx) -> value => match value {
                    Ok(v) => values.push(v),
                    Err(_) => break,
                },
                recv(heartbeat) -> _ => {
                    beats.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        (values, beats.load(Ordering::SeqCst))
    });
    producer.join().unwrap();
    let (values, beats) = consumer.join().unwrap();
    assert_eq!(values, [0, 1, 2, 3, 4]);
    assert!(beats >= 10, "{beats} heartbeats");
}

#[test]
fn a_dropped_selected_timer_operation_gives_its_message_back() {
    let timer = after(Duration::ZERO);
    {
        let mut select = Select::new();
        select.recv(&timer);
        let operation = select.select();
        assert_eq!(operation.index(), 0);
        // Dropped without `recv`: the message goes back.
    }
    assert!(timer.try_recv().is_ok(), "the message was lost with the operation");
    assert_eq!(timer.try_recv(), Err(TryRecvError::Empty));
    // A `Select` taken again after a forgotten operation: same.
    let timer = after(Duration::ZERO);
    let mut select = Select::new();
    select.recv(&timer);
    std::mem::forget(select.select());
    let operation = select.select_timeout(ms(100)).expect("the given-back message");
    assert!(operation.recv(&timer).is_ok());
}

#[test]
fn selected_operation_refuses_a_timer_it_did_not_select() {
    let timer = after(Duration::ZERO);
    let other = after(Duration::ZERO);
    let mut select = Select::new();
    select.recv(&timer);
    let operation = select.select();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| operation.recv(&other)));
    let message = *result.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("is not a recv on this channel"), "{message}");
    // The refused operation was dropped in the unwind: its message is back.
    assert!(timer.try_recv().is_ok());
}

#[test]
fn cancelling_coroutines_parked_on_timers_and_never_ends_their_waits() {
    let rt = runtime(2);
    let waits: Vec<Box<dyn Fn() + Send>> = vec![
        Box::new(|| {
            let _ = never::<u8>().recv();
        }),
        Box::new(|| {
            let _ = after(Duration::from_secs(3600)).recv();
        }),
        Box::new(|| {
            let _ = tick(Duration::from_secs(3600)).recv();
        }),
        Box::new(|| {
            let long = after(Duration::from_secs(3600));
            let nothing = never::<u8>();
            select! {
                recv(long) -> _ => {},
                recv(nothing) -> _ => {},
            }
        }),
    ];
    for (n, wait) in waits.into_iter().enumerate() {
        let victim = rt.spawn(wait);
        wait_parked_in_recv(&rt, victim.id());
        victim.cancel();
        let started = Instant::now();
        match victim.join() {
            Ok(()) => panic!("wait {n}: the victim got through its wait"),
            Err(error) => assert_eq!(error.kind(), JoinErrorKind::Cancelled, "wait {n}: {error}"),
        }
        assert!(started.elapsed() < LIMIT);
    }
}

#[test]
fn runtime_drop_with_coroutines_parked_on_timers_returns() {
    let rt = runtime(2);
    let parked = Arc::new(AtomicUsize::new(0));
    let mut ids = Vec::new();
    for i in 0..8 {
        let parked = Arc::clone(&parked);
        let handle = rt.spawn(move || {
            parked.fetch_add(1, Ordering::SeqCst);
            match i % 3 {
                0 => {
                    let _ = never::<u8>().recv();
                }
                1 => {
                    let _ = after(Duration::from_secs(3600)).recv();
                }
                _ => {
                    let _ = tick(Duration::from_secs(3600)).iter().next();
                }
            }
        });
        ids.push(handle.id());
    }
    for id in ids {
        wait_parked_in_recv(&rt, id);
    }
    let (done_tx, done_rx) = bounded::<()>(1);
    let dropper = thread::spawn(move || {
        drop(rt);
        done_tx.send(()).unwrap();
    });
    assert!(done_rx.recv_timeout(LIMIT).is_ok(), "Runtime drop hung with coroutines parked on timers");
    dropper.join().unwrap();
}
