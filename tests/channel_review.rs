//! From a review of the channel module's timers (`after`, `at`, `tick`),
//! selects and give-backs: edges the other channel tests do not reach.
//! Every wait is bounded (30 s) by a condition, never by a short sleep.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use weft::select;
use weft::sync::channel::{Receiver, Select, TryRecvError, after, bounded, unbounded};
use weft::{JoinHandle, Runtime};

const LIMIT: Duration = Duration::from_secs(30);

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().expect("a runtime with its worker threads")
}

#[track_caller]
fn assert_cancelled<R>(handles: Vec<JoinHandle<R>>) {
    for (i, mut handle) in handles.into_iter().enumerate() {
        match handle.join_timeout(LIMIT) {
            None => panic!("victim {i} was cancelled and is still parked after 30 s"),
            Some(Ok(_)) => panic!("victim {i} got through"),
            Some(Err(error)) => assert!(error.is_cancelled(), "victim {i}: {error}"),
        }
    }
}

/// Coroutines parked on spent one-shots (in a select registered with the
/// timer's back channel, or in a plain receive waiting there) are handed a
/// given-back message and cancelled before they run (one worker, kept by
/// the coroutine that gives back and cancels): each message must go back
/// to its timer, not vanish with the unwound stack.
#[test]
fn given_back_timer_messages_handed_to_cancelled_waiters_go_back() {
    let rt = runtime(1);
    const VICTIMS: usize = 12;
    let timers: Vec<Receiver<Instant>> = (0..VICTIMS).map(|_| after(Duration::ZERO)).collect();
    let (held_tx, held_rx) = bounded::<()>(0);
    let (victims_tx, victims_rx) = bounded::<Vec<JoinHandle<bool>>>(0);
    let giver = {
        let timers = timers.clone();
        rt.spawn(move || {
            // Take each timer's message into a selected operation, held.
            let mut selects: Vec<Select<'_>> = timers
                .iter()
                .map(|timer| {
                    let mut select = Select::new();
                    select.recv(timer);
                    select
                })
                .collect();
            let operations: Vec<_> = selects.iter_mut().map(|select| select.select()).collect();
            held_tx.send(()).unwrap();
            let victims = victims_rx.recv().unwrap();
            // Every victim is parked on its spent timer: give each message
            // back (handed to the victim, woken but not run: this coroutine
            // keeps the only worker), then cancel them all.
            drop(operations);
            for victim in &victims {
                victim.cancel();
            }
            victims
        })
    };
    held_rx.recv().unwrap();
    // Even victims select over their spent timer and an idle channel, odd
    // ones wait in a plain receive.
    let (_idle_tx, idle) = unbounded::<u8>();
    let victims: Vec<JoinHandle<bool>> = timers
        .iter()
        .enumerate()
        .map(|(i, timer)| {
            let (timer, idle) = (timer.clone(), idle.clone());
            rt.spawn(move || {
                if i % 2 == 0 {
                    select! {
                        recv(timer) -> message => message.is_ok(),
                        recv(idle) -> _ => false,
                    }
                } else {
                    timer.recv().is_ok()
                }
            })
        })
        .collect();
    for victim in &victims {
        common::wait_parked_in_recv(&rt, victim.id());
    }
    victims_tx.send(victims).unwrap();
    let victims = giver.join().unwrap();
    assert_cancelled(victims);
    for (i, timer) in timers.iter().enumerate() {
        assert!(timer.try_recv().is_ok(), "timer {i}: the message handed to the cancelled victim is lost");
        assert_eq!(timer.try_recv(), Err(TryRecvError::Empty), "timer {i}: a second message");
    }
}

/// A runtime dropped with coroutines parked on a spent one-shot's back
/// channel (in selects and plain receives) while the timer itself lives
/// on outside: their entries must leave the back channel with their
/// stacks, so that a message given back afterwards is kept for the next
/// receive (not written into a dead stack, nor lost).
#[test]
fn runtime_drop_leaves_the_back_channel_of_a_timer_that_outlives_it() {
    let timer = after(Duration::ZERO);
    let mut select = Select::new();
    select.recv(&timer);
    let operation = select.select(); // the timer is spent, its message held here
    let rt = runtime(2);
    let (_idle_tx, idle) = unbounded::<u8>();
    let ids: Vec<u64> = (0..6)
        .map(|i| {
            let (timer, idle) = (timer.clone(), idle.clone());
            rt.spawn(move || {
                if i % 2 == 0 {
                    select! {
                        recv(timer) -> _ => {},
                        recv(idle) -> _ => {},
                    }
                } else {
                    let _ = timer.recv();
                }
            })
            .id()
        })
        .collect();
    for &id in &ids {
        common::wait_parked_in_recv(&rt, id);
    }
    let (done_tx, done_rx) = bounded::<()>(1);
    let dropper = thread::spawn(move || {
        drop(rt);
        done_tx.send(()).unwrap();
    });
    assert!(done_rx.recv_timeout(LIMIT).is_ok(), "Runtime drop hung");
    dropper.join().unwrap();
    drop(operation); // given back: nobody waits any more
    assert!(timer.try_recv().is_ok(), "the given-back message went to a coroutine that is gone");
    assert_eq!(timer.try_recv(), Err(TryRecvError::Empty));
}

/// One `after` per round, raced for by coroutines and OS threads in every
/// kind of receive (plain, timed, select, try), half of the selects giving
/// the message back (some several times), and some coroutines cancelled
/// while they wait: the message is received exactly once, or it is still
/// in the timer at the end.
#[test]
fn one_after_raced_by_every_kind_of_receive_with_give_backs_and_cancels() {
    common::watched(Duration::from_secs(120), || {
        let rt = runtime(2);
        for round in 0..30u64 {
            let timer = after(Duration::from_micros(200 * (round % 5)));
            let received = Arc::new(AtomicUsize::new(0));
            let stop = Instant::now() + Duration::from_millis(60);
            let mut coroutines = Vec::new();
            for i in 0..8u64 {
                let (timer, received) = (timer.clone(), Arc::clone(&received));
                coroutines.push(rt.spawn(move || {
                    let (_idle_tx, idle) = unbounded::<u8>();
                    let mut gave_back = 0;
                    while Instant::now() < stop {
                        let got = match (i + round) % 4 {
                            0 => timer.recv_deadline(stop).is_ok(),
                            1 => {
                                let mut select = Select::new();
                                let case = select.recv(&timer);
                                select.recv(&idle);
                                match select.select_deadline(stop) {
                                    Ok(operation) if gave_back < 3 => {
                                        assert_eq!(operation.index(), case);
                                        gave_back += 1;
                                        drop(operation); // back to the timer
                                        weft::yield_now();
                                        false
                                    }
                                    Ok(operation) => operation.recv(&timer).is_ok(),
                                    Err(_) => false,
                                }
                            }
                            2 => select! {
                                recv(timer) -> message => message.is_ok(),
                                recv(idle) -> _ => false,
                                default(Duration::from_millis(5)) => false,
                            },
                            _ => {
                                // (No yield once it has the message: a
                                // cancel there would unwind with it.)
                                let got = timer.try_recv().is_ok();
                                if !got {
                                    weft::yield_now();
                                }
                                got
                            }
                        };
                        if got {
                            received.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                }));
            }
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (timer, received) = (timer.clone(), Arc::clone(&received));
                    thread::spawn(move || {
                        if timer.recv_deadline(stop).is_ok() {
                            received.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            // Cancel two of the coroutines at some point of their waits.
            thread::sleep(Duration::from_micros(300 * (round % 7)));
            coroutines[(round % 8) as usize].cancel();
            coroutines[((round + 3) % 8) as usize].cancel();
            for coroutine in coroutines {
                let _ = coroutine.join(); // finished, or cancelled
            }
            threads.into_iter().for_each(|t| t.join().unwrap());
            let left = usize::from(timer.try_recv().is_ok());
            assert_eq!(received.load(Ordering::SeqCst) + left, 1, "round {round}: received {received:?}, left {left}");
            assert_eq!(timer.try_recv(), Err(TryRecvError::Empty), "round {round}: a second message");
        }
    });
}

/// An OS thread waiting in a `Select` over a spent `after` (its case
/// registered with the timer's back channel) and an idle channel gets a
/// message given back by a coroutine: before its own 30 s deadline, and
/// only once.
#[test]
fn a_given_back_after_reaches_an_os_thread_waiting_in_a_select() {
    let rt = runtime(1);
    let timer = after(Duration::ZERO);
    let (take_tx, take_rx) = bounded::<()>(0);
    let (give_tx, give_rx) = bounded::<()>(0);
    // A coroutine takes the message into an operation it holds, then gives
    // it back when told.
    let holder = {
        let timer = timer.clone();
        rt.spawn(move || {
            let mut select = Select::new();
            select.recv(&timer);
            let operation = select.select();
            take_tx.send(()).unwrap();
            give_rx.recv().unwrap();
            drop(operation);
        })
    };
    take_rx.recv().unwrap();
    assert_eq!(timer.try_recv(), Err(TryRecvError::Empty), "spent while the operation is held");
    let (_idle_tx, idle) = unbounded::<u8>();
    let waiter = {
        let timer = timer.clone();
        thread::spawn(move || {
            let mut select = Select::new();
            let case = select.recv(&timer);
            select.recv(&idle);
            let started = Instant::now();
            let result = select.select_timeout(LIMIT).map(|operation| {
                assert_eq!(operation.index(), case);
                operation.recv(&timer).unwrap()
            });
            (result, started.elapsed())
        })
    };
    // Most likely the thread is registered by now; if not, its first pass
    // finds the message given back: either way it must get it.
    thread::sleep(Duration::from_millis(20));
    give_tx.send(()).unwrap();
    holder.join().unwrap();
    let (result, waited) = waiter.join().unwrap();
    assert!(result.is_ok(), "the given-back message never reached the thread's select (waited {waited:?})");
    assert_eq!(timer.try_recv(), Err(TryRecvError::Empty), "received once, not twice");
}
