//! Timer receivers (`after`, `at`, `tick`, `never`): never early, each
//! delivery taken exactly once by one of a receiver's clones (coroutines
//! and OS threads alike), in selects with channels, given back when a
//! selected operation is dropped, and waits that cancellation and runtime
//! shutdown end. The second half comes from a review: give-backs racing
//! takes, `select!` hygiene and receiver expressions, extreme durations
//! (no busy loop), tiny periods under contention, panics' locations,
//! default cases, and waits on spent timers.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use weft::select;
use weft::sync::channel::{
    Receiver, RecvTimeoutError, Select, TryRecvError, after, at, bounded, never, tick, unbounded,
};
use weft::{JoinErrorKind, Runtime};

const LIMIT: Duration = Duration::from_secs(30);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().expect("a runtime with its worker threads")
}

/// Waits until the coroutines `ids` of `rt` are parked in receives, then
/// drops `rt` on another thread: the drop must return.
#[track_caller]
fn drop_once_parked(rt: Runtime, ids: &[u64], parked: &str) {
    for &id in ids {
        common::wait_parked_in_recv(&rt, id);
    }
    let (done_tx, done_rx) = bounded::<()>(1);
    let dropper = thread::spawn(move || {
        drop(rt);
        done_tx.send(()).unwrap();
    });
    assert!(done_rx.recv_timeout(LIMIT).is_ok(), "Runtime drop hung with coroutines parked {parked}");
    dropper.join().unwrap();
}

/// CPU time of the calling OS thread.
fn thread_cpu_time() -> Duration {
    Duration::from_nanos(common::thread_activity(common::gettid()).0)
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
        common::wait_parked_in_recv(&rt, victim.id());
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
    drop_once_parked(rt, &ids, "on timers");
}

/// Many selects race for one `after`, half of them dropping what they took:
/// the message is received at most once, and if nobody received it, it is
/// still in the timer.
#[test]
fn racing_selects_that_give_back_never_duplicate_an_after() {
    let rt = runtime(2);
    for round in 0..20 {
        let timer = after(ms(2));
        let received = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + ms(100);
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (timer, received) = (timer.clone(), Arc::clone(&received));
                rt.spawn(move || {
                    while Instant::now() < deadline {
                        let mut select = Select::new();
                        select.recv(&timer);
                        if let Ok(operation) = select.select_deadline(deadline) {
                            if i % 2 == 0 {
                                drop(operation); // give it back
                                weft::yield_now();
                            } else {
                                operation.recv(&timer).unwrap();
                                received.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        let left = usize::from(timer.try_recv().is_ok());
        assert_eq!(received.load(Ordering::SeqCst) + left, 1, "round {round}");
        assert_eq!(timer.try_recv(), Err(TryRecvError::Empty), "round {round}: a second message");
    }
}

/// A tick taken by a select and dropped unreceived comes again (nobody took
/// a later one); received, it does not.
#[test]
fn a_dropped_tick_operation_gives_the_same_tick_back() {
    let ticker = tick(ms(20));
    thread::sleep(ms(25));
    let mut select = Select::new();
    let case = select.recv(&ticker);
    let first = {
        let operation = select.select();
        assert_eq!(operation.index(), case);
        assert_eq!(ticker.len(), 0, "a held tick is not waiting in the ticker");
        drop(operation);
        ticker.try_recv().expect("the given-back tick")
    };
    let operation = select.select_timeout(Duration::from_secs(5)).expect("the next tick");
    let second = operation.recv(&ticker).unwrap();
    assert!(second > first, "{second:?} after {first:?}");
    assert_eq!(((second - first).as_nanos()) % ms(20).as_nanos(), 0, "off the grid");
}

// ---------------------------------------------------------------------
// 1. select! macro: hygiene and receiver expressions.
// ---------------------------------------------------------------------

#[test]
#[allow(non_snake_case)]
fn select_macro_receivers_named_like_its_generated_cases() {
    // Locals with the names the macro gives its cases: the macro's own
    // bindings must not capture or shadow them.
    let (tx0, __weft_case0) = unbounded::<u8>();
    let __weft_case1 = never::<u8>();
    let (_tx2, __weft_case2) = unbounded::<u8>();
    tx0.send(3).unwrap();
    let got = select! {
        recv(__weft_case1) -> _ => unreachable!(),
        recv(__weft_case2) -> _ => unreachable!(),
        recv(__weft_case0) -> v => v.unwrap(),
    };
    assert_eq!(got, 3);
    // And a case whose receiver is the previous case's name.
    tx0.send(4).unwrap();
    let got = select! {
        recv(__weft_case1) -> _ => unreachable!(),
        recv(__weft_case0) -> v => v.unwrap(),
        default(ms(1000)) => panic!("nothing"),
    };
    assert_eq!(got, 4);
}

#[test]
fn select_macro_receiver_expressions() {
    let (tx, rx) = unbounded::<u32>();
    let by_ref: &Receiver<u32> = &rx;
    let boxed = Box::new(rx.clone());
    let in_vec = [never::<u32>(), rx.clone()];
    let maybe: Option<Receiver<u32>> = Some(rx.clone());
    let shared = Arc::new(rx.clone());
    for round in 0..5u32 {
        tx.send(round).unwrap();
        let got = match round {
            0 => select! { recv(by_ref) -> v => v.unwrap() },
            1 => select! { recv(*boxed) -> v => v.unwrap() },
            2 => select! { recv(in_vec[0]) -> _ => unreachable!(), recv(in_vec[1]) -> v => v.unwrap() },
            3 => select! { recv(maybe.as_ref().unwrap()) -> v => v.unwrap() },
            _ => select! { recv(shared) -> v => v.unwrap() },
        };
        assert_eq!(got, round);
    }
    // A receiver made in the case inside a loop: a fresh timer each time
    // (Go's `case <-time.After(d)`), which lives until its select ends.
    let mut timeouts = 0;
    for _ in 0..3 {
        select! {
            recv(rx) -> _ => unreachable!(),
            recv(after(ms(2))) -> due => {
                assert!(Instant::now() >= due.unwrap());
                timeouts += 1;
            }
        }
    }
    assert_eq!(timeouts, 3);
    // A receiver made from a lock guard: compiles now (the guard lives
    // until the select ends).
    let locked = Mutex::new(rx.clone());
    tx.send(9).unwrap();
    let got = select! { recv(*locked.lock().unwrap()) -> v => v.unwrap() };
    assert_eq!(got, 9);
    assert!(locked.try_lock().is_ok(), "the guard outlived the select");
}

#[test]
fn select_macro_default_cases_with_timers() {
    // `default` with a due timer: the timer.
    let past = Instant::now();
    let got = select! {
        recv(at(past)) -> due => due.ok(),
        default => None,
    };
    assert_eq!(got, Some(past));
    // `default` with a timer not due yet: the default.
    let got = select! {
        recv(after(Duration::from_secs(3600))) -> _ => false,
        default => true,
    };
    assert!(got);
    // `default(timeout)` earlier than the timer: the default, not early.
    let start = Instant::now();
    let got = select! {
        recv(after(Duration::from_secs(3600))) -> _ => false,
        default(ms(20)) => true,
    };
    assert!(got && start.elapsed() >= ms(20));
    // `default(timeout)` later than the timer: the timer, not early.
    let start = Instant::now();
    let got = select! {
        recv(after(ms(20))) -> due => {
            let due = due.unwrap();
            assert!(due >= start + ms(20) && Instant::now() >= due);
            true
        }
        default(Duration::from_secs(20)) => false,
    };
    assert!(got && start.elapsed() < Duration::from_secs(20));
    // Only `never`s: the default after its timeout.
    let start = Instant::now();
    let got = select! {
        recv(never::<u8>()) -> _ => false,
        recv(never::<String>()) -> _ => false,
        default(ms(15)) => true,
    };
    assert!(got && start.elapsed() >= ms(15));
}

// ---------------------------------------------------------------------
// 2. Soundness probes: a selected operation handed the wrong receiver.
// ---------------------------------------------------------------------

#[test]
fn selected_operation_refuses_never_and_other_flavours() {
    let nothing = never::<Instant>();
    let timer = at(Instant::now());
    let (_tx, chan) = unbounded::<Instant>();
    let mut select = Select::new();
    select.recv(&nothing);
    let timer_case = select.recv(&timer);
    for wrong in [never::<Instant>(), chan.clone(), after(Duration::ZERO)] {
        let operation = select.select();
        assert_eq!(operation.index(), timer_case);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| operation.recv(&wrong)));
        assert!(result.is_err(), "a wrong receiver was accepted");
    }
    // Each refused operation gave its delivery back.
    assert!(timer.try_recv().is_ok());
}

// ---------------------------------------------------------------------
// 3. Extreme durations: never come, never overflow, never spin.
// ---------------------------------------------------------------------

/// Receivers whose message never comes (or comes in centuries).
fn far_receivers() -> Vec<(&'static str, Receiver<Instant>)> {
    vec![
        ("after(MAX)", after(Duration::MAX)),
        ("after(2^62 s)", after(Duration::from_secs(1 << 62))),
        ("after(u64::MAX ns)", after(Duration::from_nanos(u64::MAX))),
        ("tick(MAX)", tick(Duration::MAX)),
        ("tick(u64::MAX ns)", tick(Duration::from_nanos(u64::MAX))),
        ("tick(u64::MAX / 2 ns)", tick(Duration::from_nanos(u64::MAX / 2))),
        ("at(now + 2^62 s)", at(Instant::now().checked_add(Duration::from_secs(1 << 62)).unwrap())),
    ]
}

#[test]
fn far_timers_never_come_and_their_waits_do_not_spin_on_a_thread() {
    for (name, far) in far_receivers() {
        assert_eq!(far.try_recv(), Err(TryRecvError::Empty), "{name}");
        assert_eq!((far.len(), far.is_empty(), far.is_full()), (0, true, false), "{name}");
        let cpu = thread_cpu_time();
        let start = Instant::now();
        assert_eq!(far.recv_timeout(ms(100)), Err(RecvTimeoutError::Timeout), "{name}");
        let mut select = Select::new();
        select.recv(&far);
        assert!(select.select_timeout(ms(100)).is_err(), "{name}");
        let wall = start.elapsed();
        let spent = thread_cpu_time() - cpu;
        assert!(wall >= ms(200), "{name}: gave up early ({wall:?})");
        assert!(spent < wall / 2, "{name}: {spent:?} of CPU in {wall:?} of waiting: a busy loop");
    }
}

#[test]
fn far_timers_waits_do_not_spin_in_a_coroutine() {
    let rt = runtime(1);
    let results = rt
        .spawn(|| {
            let mut out = Vec::new();
            for (name, far) in far_receivers() {
                let cpu = thread_cpu_time();
                let start = Instant::now();
                let timed_out = far.recv_timeout(ms(100)).is_err();
                let (_tx, idle) = unbounded::<u8>();
                let selected = select! {
                    recv(idle) -> _ => true,
                    recv(far) -> _ => true,
                    default(ms(100)) => false,
                };
                out.push((name, timed_out && !selected, start.elapsed(), thread_cpu_time() - cpu));
            }
            out
        })
        .join()
        .unwrap();
    for (name, timed_out, wall, spent) in results {
        assert!(timed_out, "{name}: a message came");
        assert!(wall >= ms(200), "{name}: gave up early ({wall:?})");
        assert!(spent < wall / 2, "{name}: the worker spent {spent:?} of CPU in {wall:?}: a busy loop");
    }
}

#[test]
fn an_at_in_the_far_past_is_ready_with_its_instant() {
    let long_ago = Instant::now().checked_sub(Duration::from_secs(3600)).unwrap_or_else(Instant::now);
    let alarm = at(long_ago);
    assert_eq!((alarm.len(), alarm.is_full()), (1, true));
    let mut select = Select::new();
    select.recv(&alarm);
    assert_eq!(select.try_select().unwrap().recv(&alarm), Ok(long_ago));
    assert_eq!(alarm.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(alarm.recv_timeout(ms(5)), Err(RecvTimeoutError::Timeout));
}

/// `tick` is `#[track_caller]`: its zero-period panic should name the
/// caller's line, not the library's.
#[test]
fn a_zero_tick_panics_at_the_callers_line() {
    std::thread_local! {
        static LOCATION: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    }
    let previous = Arc::new(std::panic::take_hook());
    let forward = Arc::clone(&previous);
    std::panic::set_hook(Box::new(move |info| {
        let here = LOCATION.with(|l| l.borrow().is_some());
        if here {
            LOCATION.with(|l| *l.borrow_mut() = info.location().map(|l| l.file().to_owned()));
        } else {
            forward(info);
        }
    }));
    LOCATION.with(|l| *l.borrow_mut() = Some(String::new()));
    let result = std::panic::catch_unwind(|| tick(Duration::ZERO));
    let file = LOCATION.with(|l| l.borrow_mut().take()).unwrap();
    let _ = std::panic::take_hook(); // ours; the previous one stays installed in `forward`
    std::panic::set_hook(Box::new(move |info| previous(info)));
    let payload = result.expect_err("tick(ZERO) returned");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .expect("a panic with a message");
    assert!(message.contains("the period is zero"), "{message}");
    assert!(file.ends_with("channel_timers.rs"), "the panic names {file}, not the caller of tick");
}

// ---------------------------------------------------------------------
// 4. Tiny periods under contention: no duplicate, no early tick, progress.
// ---------------------------------------------------------------------

#[test]
fn a_one_nanosecond_ticker_in_a_select_loop_makes_progress() {
    let ticker = tick(Duration::from_nanos(1));
    let (tx, rx) = unbounded::<u32>();
    let mut previous = None;
    let (mut ticks, mut values) = (0, 0);
    for i in 0..20_000u32 {
        if i % 4 == 0 {
            tx.send(i).unwrap();
        }
        select! {
            recv(rx) -> v => { v.unwrap(); values += 1; }
            recv(ticker) -> due => {
                let due = due.unwrap();
                assert!(Instant::now() >= due, "a tick before its time");
                assert!(previous.is_none_or(|p| due > p), "ticks out of order");
                previous = Some(due);
                ticks += 1;
            }
        }
    }
    assert!(ticks > 1000 && values > 1000, "ticks {ticks}, values {values}: one case starves");
}

#[test]
fn many_clones_race_for_tiny_ticks_without_duplicates() {
    let rt = runtime(2);
    let ticker = tick(Duration::from_nanos(1_000));
    let deadline = Instant::now() + ms(300);
    let mut coroutines = Vec::new();
    for i in 0..16 {
        let ticker = ticker.clone();
        coroutines.push(rt.spawn(move || {
            let mut got = Vec::new();
            let (_tx, idle) = unbounded::<u8>();
            while Instant::now() < deadline {
                match i % 3 {
                    0 => {
                        if let Ok(due) = ticker.recv_deadline(deadline) {
                            got.push(due);
                        }
                    }
                    1 => {
                        if let Ok(due) = ticker.try_recv() {
                            got.push(due);
                        }
                        weft::yield_now();
                    }
                    _ => select! {
                        recv(idle) -> _ => unreachable!(),
                        recv(ticker) -> due => got.push(due.unwrap()),
                        default(ms(50)) => {}
                    },
                }
            }
            got
        }));
    }
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let ticker = ticker.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                while let Ok(due) = ticker.recv_deadline(deadline) {
                    assert!(Instant::now() >= due);
                    got.push(due);
                }
                got
            })
        })
        .collect();
    let started = Instant::now();
    let mut all: Vec<Instant> = coroutines.into_iter().flat_map(|c| c.join().unwrap()).collect();
    all.extend(threads.into_iter().flat_map(|t| t.join().unwrap()));
    assert!(started.elapsed() < LIMIT);
    let received = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), received, "a tick was received twice");
    assert!(received > 100, "only {received} ticks of 1 us in 300 ms");
}

#[test]
fn many_threads_race_for_one_after() {
    for round in 0..20 {
        let timer = after(ms(1));
        let got = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (timer, got) = (timer.clone(), Arc::clone(&got));
                thread::spawn(move || {
                    let deadline = Instant::now() + ms(50);
                    while Instant::now() < deadline {
                        if timer.try_recv().is_ok() {
                            got.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(got.load(Ordering::SeqCst), 1, "round {round}");
    }
}

// ---------------------------------------------------------------------
// 5. Spent timers: wait for ever, ended by cancellation and runtime drop.
// ---------------------------------------------------------------------

#[test]
fn a_spent_after_waits_for_ever_until_cancelled() {
    let rt = runtime(2);
    let waits: Vec<Box<dyn Fn() + Send>> = vec![
        Box::new(|| {
            let timer = after(Duration::ZERO);
            timer.recv().unwrap();
            let _ = timer.recv(); // for ever
        }),
        Box::new(|| {
            let timer = after(Duration::ZERO);
            timer.recv().unwrap();
            let (_tx, idle) = unbounded::<u8>();
            select! {
                recv(timer) -> _ => {},
                recv(idle) -> _ => {},
            }
        }),
        Box::new(|| {
            let nothing = never::<u8>();
            let mut select = Select::new();
            select.recv(&nothing);
            let _ = select.select();
        }),
    ];
    for (n, wait) in waits.into_iter().enumerate() {
        let victim = rt.spawn(wait);
        common::wait_parked_in_recv(&rt, victim.id());
        thread::sleep(ms(20));
        assert!(!victim.is_finished(), "wait {n} ended");
        victim.cancel();
        match victim.join() {
            Ok(()) => panic!("wait {n}: the victim got through its wait"),
            Err(error) => assert_eq!(error.kind(), JoinErrorKind::Cancelled, "wait {n}: {error}"),
        }
    }
}

#[test]
fn runtime_drop_with_coroutines_parked_in_selects_on_timers_returns() {
    let rt = runtime(2);
    let mut ids = Vec::new();
    for i in 0..6 {
        let handle = rt.spawn(move || {
            let (_tx, idle) = unbounded::<u8>();
            match i % 3 {
                0 => select! {
                    recv(idle) -> _ => {},
                    recv(after(Duration::from_secs(3600))) -> _ => {},
                },
                1 => select! {
                    recv(tick(Duration::from_secs(3600))) -> _ => {},
                    recv(never::<u8>()) -> _ => {},
                    default(Duration::from_secs(7200)) => {},
                },
                _ => {
                    let spent = after(Duration::ZERO);
                    spent.recv().unwrap();
                    let mut select = Select::new();
                    select.recv(&spent);
                    select.recv(&idle);
                    let _ = select.select();
                }
            }
        });
        ids.push(handle.id());
    }
    drop_once_parked(rt, &ids, "in selects on timers");
}

// ---------------------------------------------------------------------
// 6. Metadata per flavour.
// ---------------------------------------------------------------------

#[test]
fn metadata_of_each_flavour() {
    let ticker = tick(ms(10));
    assert_eq!((ticker.len(), ticker.is_empty(), ticker.is_full(), ticker.capacity()), (0, true, false, Some(1)));
    thread::sleep(ms(15));
    assert_eq!((ticker.len(), ticker.is_empty(), ticker.is_full()), (1, false, true));
    ticker.try_recv().unwrap();
    assert_eq!((ticker.len(), ticker.is_full()), (0, false));
    assert!(ticker.same_channel(&ticker.clone()));
    assert!(!ticker.same_channel(&tick(ms(10))));
    assert!(!ticker.same_channel(&never()));
    let spent = after(Duration::ZERO);
    spent.recv().unwrap();
    assert_eq!((spent.len(), spent.is_empty(), spent.is_full(), spent.capacity()), (0, true, false, Some(1)));
    let nothing = never::<Instant>();
    assert!(!nothing.same_channel(&spent));
    let _ = format!("{ticker:?} {nothing:?}");
}

// ---------------------------------------------------------------------
// 7. A one-shot's message given back reaches a clone already waiting.
// ---------------------------------------------------------------------

/// A `Select` takes an `after`'s message into an operation that is then
/// dropped unreceived; meanwhile a clone waits on the spent timer in
/// `waiting` (which returns whether it got the message). The give-back
/// must reach it well before its own 30 s run out.
fn a_given_back_message_reaches(waiting: impl FnOnce(Receiver<Instant>) -> bool + Send + 'static, in_coroutine: bool) {
    let rt = runtime(2);
    let timer = after(Duration::ZERO);
    let mut select = Select::new();
    select.recv(&timer);
    let operation = select.select();
    let clone = timer.clone();
    let (started_tx, started_rx) = bounded::<()>(1);
    let wait = move || {
        started_tx.send(()).unwrap();
        waiting(clone)
    };
    let (coroutine, thread) = if in_coroutine {
        let handle = rt.spawn(wait);
        started_rx.recv().unwrap();
        common::wait_parked_in_recv(&rt, handle.id());
        (Some(handle), None)
    } else {
        let handle = thread::spawn(wait);
        started_rx.recv().unwrap();
        thread::sleep(ms(50)); // let it block (if it has not, it takes the message at once)
        (None, Some(handle))
    };
    drop(operation); // the message goes back
    let started = Instant::now();
    let got = match (coroutine, thread) {
        (Some(handle), _) => handle.join().unwrap(),
        (_, Some(handle)) => handle.join().unwrap(),
        _ => unreachable!(),
    };
    assert!(got, "the waiting clone did not get the given-back message");
    assert!(started.elapsed() < Duration::from_secs(20), "it came only at the waiter's own deadline");
    assert_eq!(timer.try_recv(), Err(TryRecvError::Empty), "received once, not twice");
}

#[test]
fn a_given_back_after_reaches_a_coroutine_waiting_in_recv() {
    a_given_back_message_reaches(|clone| clone.recv_timeout(LIMIT).is_ok(), true);
}

#[test]
fn a_given_back_after_reaches_an_os_thread_waiting_in_recv() {
    a_given_back_message_reaches(|clone| clone.recv_timeout(LIMIT).is_ok(), false);
}

#[test]
fn a_given_back_after_reaches_a_coroutine_waiting_in_a_select() {
    a_given_back_message_reaches(
        |clone| {
            let (_tx, idle) = unbounded::<u8>();
            select! {
                recv(idle) -> _ => false,
                recv(clone) -> message => message.is_ok(),
                default(LIMIT) => false,
            }
        },
        true,
    );
}

#[test]
fn a_given_back_after_reaches_a_thread_in_plain_recv_without_deadline() {
    // `recv` (no deadline) on a spent `after` waits on the back channel.
    a_given_back_message_reaches(|clone| clone.recv().is_ok(), false);
}
