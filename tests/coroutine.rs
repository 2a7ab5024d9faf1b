//! Integration tests of `weft::coroutine` through its public API: the
//! resume/suspend protocol, panics, drops, nesting, backtraces, stack sizes,
//! stack reuse and floating-point control state across switches. The
//! property test of nested coroutines against a sequential model is in
//! `proptests/tests/coroutine_trees.rs` (its own package, so that weft's
//! tests and examples do not compile proptest).

use std::any::Any;
use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use weft::coroutine::{Coroutine, CoroutineResult, DEFAULT_STACK_SIZE, MIN_STACK_SIZE, Yielder};

/// Counts its own drops into a shared counter.
struct DropCounter(Rc<Cell<usize>>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// Pushes its label into a shared log when dropped, to check drop order.
struct DropLog(Rc<RefCell<Vec<String>>>, String);

impl Drop for DropLog {
    fn drop(&mut self) {
        self.0.borrow_mut().push(self.1.clone());
    }
}

/// The message of a panic payload, if it is a `&str` or a `String`.
fn panic_message(payload: &(dyn Any + Send)) -> Option<&str> {
    payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

/// Resumes `c`, expecting it to panic, and returns the payload.
fn resume_expecting_panic<I, Y, R>(c: &mut Coroutine<I, Y, R>, input: I) -> Box<dyn Any + Send> {
    match panic::catch_unwind(AssertUnwindSafe(|| c.resume(input))) {
        Ok(_) => panic!("the resume was expected to panic"),
        Err(payload) => payload,
    }
}

// ---------------------------------------------------------------------------
// Smoke
// ---------------------------------------------------------------------------

/// Inputs reach the coroutine in order (the first as the closure's argument,
/// later ones as `suspend`'s value) and yields/return reach the resumer in
/// order; the state flags follow the protocol.
#[test]
fn yields_and_return_carry_inputs_in_order() {
    let mut c = Coroutine::new(|y: &Yielder<String, usize>, first: String| {
        let mut seen = vec![first];
        loop {
            let next = y.suspend(seen.len());
            if next == "stop" {
                break;
            }
            seen.push(next);
        }
        seen.join(",")
    });
    assert!(!c.is_started());
    assert!(!c.is_finished());
    assert_eq!(c.stack_size(), DEFAULT_STACK_SIZE);
    assert_eq!(c.name(), None);
    assert_eq!(c.resume("a".to_string()), CoroutineResult::Yield(1));
    assert!(c.is_started());
    assert!(!c.is_finished());
    assert_eq!(c.resume("b".to_string()), CoroutineResult::Yield(2));
    assert_eq!(c.resume("c".to_string()), CoroutineResult::Yield(3));
    assert_eq!(c.resume("stop".to_string()), CoroutineResult::Return("a,b,c".to_string()));
    assert!(c.is_finished());
}

/// A generator yields every value of 0..100 and then returns; nothing is
/// skipped or repeated across 100 switches.
#[test]
fn generator_yields_0_to_100() {
    let mut g = Coroutine::new(|y: &Yielder<(), u32>, ()| {
        for i in 0..100 {
            y.suspend(i);
        }
        "end"
    });
    let mut got = Vec::new();
    loop {
        match g.resume(()) {
            CoroutineResult::Yield(v) => got.push(v),
            CoroutineResult::Return(r) => {
                assert_eq!(r, "end");
                break;
            }
        }
    }
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    assert!(g.is_finished());
}

/// A suspended coroutine can be moved (here by a growing Vec reallocating,
/// and by boxing) between resumes: nothing on its stack points back into
/// the old `Coroutine` value.
#[test]
fn suspended_coroutines_can_move_between_resumes() {
    let mut all = Vec::new();
    for k in 0..100u64 {
        let mut c = Coroutine::<u64, u64, u64>::new(move |y, a| {
            let b = y.suspend(a + k);
            let c = y.suspend(b * 2);
            a + b + c + k
        });
        assert_eq!(c.resume(1), CoroutineResult::Yield(1 + k));
        all.push(c); // reallocations move the earlier ones
    }
    let mut boxed: Vec<Box<Coroutine<u64, u64, u64>>> = all.into_iter().map(Box::new).collect();
    for c in boxed.iter_mut() {
        assert_eq!(c.resume(3), CoroutineResult::Yield(6));
    }
    for (k, c) in boxed.into_iter().enumerate() {
        let mut c = *c;
        assert_eq!(c.resume(5), CoroutineResult::Return(1 + 3 + 5 + k as u64));
    }
}

/// Ids are distinct per coroutine and names come from the builder.
#[test]
fn ids_are_unique_and_names_are_kept() {
    let a = Coroutine::<(), (), ()>::new(|_, ()| {});
    let b = Coroutine::<(), (), ()>::builder().name("bee".to_string()).build(|_, ()| {}).unwrap();
    assert_ne!(a.id(), b.id());
    assert_eq!(b.name(), Some("bee"));
    assert_eq!(a.name(), None);
}

// ---------------------------------------------------------------------------
// Panics
// ---------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
struct CustomPayload {
    code: u32,
    text: String,
}

/// A `&'static str` panic payload crosses the switch unchanged; the
/// coroutine is finished afterwards and the thread keeps working.
#[test]
fn panic_with_str_payload_reaches_resumer() {
    let mut c = Coroutine::<(), (), ()>::new(|_, ()| panic!("boom from inside"));
    let payload = resume_expecting_panic(&mut c, ());
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom from inside"));
    assert!(c.is_finished());
    // The resumer's stack is intact and new coroutines work on this thread.
    let mut d = Coroutine::<u32, u32, u32>::new(|y, x| y.suspend(x + 1) * 2);
    assert_eq!(d.resume(1), CoroutineResult::Yield(2));
    assert_eq!(d.resume(5), CoroutineResult::Return(10));
}

/// A formatted (`String`) panic payload raised after a suspend, several
/// calls deep, crosses the switch unchanged.
#[test]
fn panic_with_string_payload_after_suspend_reaches_resumer() {
    #[inline(never)]
    fn fail_deep(y: &Yielder<u32, ()>, depth: u32) {
        if depth == 0 {
            let v = y.suspend(());
            panic!("formatted {v} and {}", v * 2);
        }
        fail_deep(y, depth - 1);
        black_box(depth);
    }
    let mut c = Coroutine::<u32, (), ()>::new(|y, _first| fail_deep(y, 10));
    assert_eq!(c.resume(0), CoroutineResult::Yield(()));
    let payload = resume_expecting_panic(&mut c, 21);
    assert_eq!(payload.downcast_ref::<String>().map(String::as_str), Some("formatted 21 and 42"));
    assert!(c.is_finished());
}

/// A custom payload type from `panic_any` is not re-boxed or stringified.
#[test]
fn panic_any_custom_payload_reaches_resumer() {
    let mut c = Coroutine::<(), (), ()>::new(|_, ()| {
        panic::panic_any(CustomPayload { code: 7, text: "custom".to_string() });
    });
    let payload = resume_expecting_panic(&mut c, ());
    let custom = payload.downcast::<CustomPayload>().expect("the payload keeps its type");
    assert_eq!(*custom, CustomPayload { code: 7, text: "custom".to_string() });
    assert!(c.is_finished());
}

/// Resuming a finished coroutine (returned, or panicked) panics with a
/// message instead of running anything or crashing.
#[test]
fn resuming_a_finished_coroutine_panics_with_message() {
    let runs = Rc::new(Cell::new(0));
    let r = runs.clone();
    let mut c = Coroutine::<(), (), ()>::new(move |_, ()| r.set(r.get() + 1));
    assert_eq!(c.resume(()), CoroutineResult::Return(()));
    let payload = resume_expecting_panic(&mut c, ());
    let message = panic_message(&*payload).expect("a message");
    assert!(message.contains("after it finished"), "unexpected message: {message}");
    assert!(message.contains(&c.id().to_string()), "message should name the coroutine: {message}");
    assert_eq!(runs.get(), 1);

    let mut p = Coroutine::<(), (), ()>::new(|_, ()| panic!("first"));
    let _ = resume_expecting_panic(&mut p, ());
    let payload = resume_expecting_panic(&mut p, ());
    let message = panic_message(&*payload).expect("a message");
    assert!(message.contains("after it finished"), "unexpected message: {message}");
}

/// A panic three coroutines deep propagates through each resume with the
/// same payload, finishing every coroutine it passes through.
#[test]
fn panic_propagates_through_nested_coroutines() {
    let mut outer = Coroutine::<(), (), ()>::new(|_, ()| {
        let mut middle = Coroutine::<(), (), ()>::new(|_, ()| {
            let mut inner = Coroutine::<(), (), ()>::new(|_, ()| {
                panic::panic_any(CustomPayload { code: 3, text: "innermost".to_string() })
            });
            inner.resume(());
            unreachable!("inner's panic continues in middle");
        });
        middle.resume(());
        unreachable!("middle's panic continues in outer");
    });
    let payload = resume_expecting_panic(&mut outer, ());
    assert_eq!(payload.downcast_ref::<CustomPayload>().map(|p| p.code), Some(3));
    assert!(outer.is_finished());
}

/// A coroutine can catch the panic of a coroutine it resumes and carry on
/// suspending and returning normally.
#[test]
fn coroutine_catches_nested_panic_and_continues() {
    let mut outer = Coroutine::<(), u32, &'static str>::new(|y, ()| {
        let mut inner = Coroutine::<(), (), ()>::new(|_, ()| panic!("inner failed"));
        let caught = panic::catch_unwind(AssertUnwindSafe(|| inner.resume(()))).unwrap_err();
        assert!(inner.is_finished());
        y.suspend(1);
        y.suspend(2);
        caught.downcast_ref::<&str>().copied().unwrap_or("wrong payload")
    });
    assert_eq!(outer.resume(()), CoroutineResult::Yield(1));
    assert_eq!(outer.resume(()), CoroutineResult::Yield(2));
    assert_eq!(outer.resume(()), CoroutineResult::Return("inner failed"));
}

// ---------------------------------------------------------------------------
// Drops
// ---------------------------------------------------------------------------

/// Dropping a suspended coroutine unwinds its stack: locals in every frame,
/// several calls deep, are dropped exactly once, innermost first, and the
/// code after the suspend never runs.
#[test]
fn drop_suspended_unwinds_nested_frames_exactly_once() {
    #[inline(never)]
    fn descend(y: &Yielder<(), ()>, depth: usize, count: &Rc<Cell<usize>>, log: &Rc<RefCell<Vec<String>>>) {
        let _counter = DropCounter(count.clone());
        let _log = DropLog(log.clone(), format!("frame {depth}"));
        if depth == 0 {
            y.suspend(());
        } else {
            descend(y, depth - 1, count, log);
        }
        panic!("resumed past the suspend at depth {depth}: the drop should have unwound");
    }
    let count = Rc::new(Cell::new(0));
    let log = Rc::new(RefCell::new(Vec::new()));
    let (c2, l2) = (count.clone(), log.clone());
    let mut c = Coroutine::<(), (), ()>::new(move |y, ()| {
        let _top = DropLog(l2.clone(), "closure".to_string());
        descend(y, 5, &c2, &l2);
    });
    assert_eq!(c.resume(()), CoroutineResult::Yield(()));
    assert_eq!(count.get(), 0, "nothing is dropped while suspended");
    drop(c);
    assert_eq!(count.get(), 6, "one counter per frame, each dropped once");
    let expected: Vec<String> =
        (0..=5).map(|d| format!("frame {d}")).chain(std::iter::once("closure".to_string())).collect();
    assert_eq!(*log.borrow(), expected);
}

/// Dropping a never-started coroutine drops the closure's captures exactly
/// once and never runs the closure.
#[test]
fn drop_fresh_drops_captures_without_running() {
    let count = Rc::new(Cell::new(0));
    let ran = Rc::new(Cell::new(false));
    let guard = DropCounter(count.clone());
    let r = ran.clone();
    let c = Coroutine::<(), (), ()>::new(move |_, ()| {
        r.set(true);
        drop(guard);
    });
    assert_eq!(count.get(), 0);
    drop(c);
    assert_eq!(count.get(), 1);
    assert!(!ran.get());
}

/// Dropping a finished coroutine (returned or panicked) drops nothing a
/// second time; its captures were consumed when the closure ran.
#[test]
fn drop_finished_drops_nothing_twice() {
    let count = Rc::new(Cell::new(0));
    let guard = DropCounter(count.clone());
    let mut c = Coroutine::<(), (), ()>::new(move |y, ()| {
        let _g = guard;
        y.suspend(());
    });
    assert_eq!(c.resume(()), CoroutineResult::Yield(()));
    assert_eq!(c.resume(()), CoroutineResult::Return(()));
    assert_eq!(count.get(), 1);
    drop(c);
    assert_eq!(count.get(), 1);

    let guard = DropCounter(count.clone());
    let mut p = Coroutine::<(), (), ()>::new(move |_, ()| {
        let _g = guard;
        panic!("drop me during the panic");
    });
    let _ = resume_expecting_panic(&mut p, ());
    assert_eq!(count.get(), 2, "the panic unwound the coroutine's frame once");
    drop(p);
    assert_eq!(count.get(), 2);
}

/// Every drop gives the coroutine's stack back, whatever state it is in:
/// 100 000 named coroutines dropped suspended, finished and fresh, more
/// than `vm.max_map_count` (65 530 by default) would let a leaked stack
/// mapping per drop survive, so a drop that kept its stack fails a later
/// start with an error.
#[test]
fn drops_in_every_state_give_the_stack_back() {
    for i in 0..100_000u32 {
        let name = format!("drop-{i}");
        let mut suspended = Coroutine::<(), u32, ()>::builder()
            .name(name.clone())
            .build(move |y, ()| y.suspend(i))
            .expect("a default stack size is valid");
        match suspended.try_resume(()) {
            Ok(result) => assert_eq!(result, CoroutineResult::Yield(i)),
            Err(e) => panic!("iteration {i}: no stack to start a coroutine (an earlier drop kept one?): {e}"),
        }
        drop(suspended);
        let mut finished = Coroutine::<(), (), u32>::builder().name(name.clone()).build(move |_, ()| i).expect("valid");
        match finished.try_resume(()) {
            Ok(result) => assert_eq!(result, CoroutineResult::Return(i)),
            Err(e) => panic!("iteration {i}: no stack to start a coroutine (an earlier drop kept one?): {e}"),
        }
        drop(finished);
        drop(Coroutine::<(), (), ()>::builder().name(name).build(|_, ()| ()).expect("valid"));
    }
}

/// Inputs, yielded values and the return value each get dropped exactly
/// once, wherever they end up (none leaked or duplicated by the exchange).
#[test]
fn values_crossing_the_switch_drop_exactly_once() {
    let count = Rc::new(Cell::new(0));
    let c2 = count.clone();
    let mut c = Coroutine::<DropCounter, DropCounter, DropCounter>::new(move |y, first| {
        drop(first);
        for _ in 0..10 {
            let input = y.suspend(DropCounter(c2.clone()));
            drop(input);
        }
        DropCounter(c2.clone())
    });
    let mut expected = 0;
    for _ in 0..10 {
        let yielded = c.resume(DropCounter(count.clone()));
        assert!(matches!(yielded, CoroutineResult::Yield(_)));
        drop(yielded);
        expected += 2; // the input and the yield
        assert_eq!(count.get(), expected);
    }
    let returned = c.resume(DropCounter(count.clone()));
    assert!(matches!(returned, CoroutineResult::Return(_)));
    drop(returned);
    expected += 2;
    assert_eq!(count.get(), expected);
    drop(c);
    assert_eq!(count.get(), expected);
}

/// A coroutine that catches the forced unwind and suspends again is asked
/// again until it ends; its destructors still run exactly once.
#[test]
fn drop_of_coroutine_that_catches_the_unwind() {
    let count = Rc::new(Cell::new(0));
    let caught = Rc::new(Cell::new(0));
    let (c2, k2) = (count.clone(), caught.clone());
    let mut c = Coroutine::<(), (), ()>::new(move |y, ()| {
        let _g = DropCounter(c2.clone());
        loop {
            let r = panic::catch_unwind(AssertUnwindSafe(|| {
                let _inner = DropCounter(c2.clone());
                y.suspend(())
            }));
            if r.is_err() {
                k2.set(k2.get() + 1);
                if k2.get() == 3 {
                    return;
                }
            }
        }
    });
    assert_eq!(c.resume(()), CoroutineResult::Yield(()));
    assert_eq!(c.resume(()), CoroutineResult::Yield(()));
    // The second resume returned from `suspend` normally, dropping one `_inner`.
    assert_eq!(count.get(), 1);
    drop(c);
    assert_eq!(caught.get(), 3);
    // Three more `_inner` counters (one per caught unwind) and `_g` once.
    assert_eq!(count.get(), 5);
}

/// A suspended coroutine dropped while its owner is unwinding from a panic
/// (a second, forced unwind nested inside the first) still runs its
/// destructors once, and the owner's original payload arrives intact.
#[test]
fn drop_suspended_while_resumer_unwinds() {
    let count = Rc::new(Cell::new(0));
    let c2 = count.clone();
    let result = panic::catch_unwind(AssertUnwindSafe(move || {
        let c3 = c2.clone();
        let mut c = Coroutine::<(), (), ()>::new(move |y, ()| {
            let _g = DropCounter(c3);
            y.suspend(());
            unreachable!();
        });
        assert_eq!(c.resume(()), CoroutineResult::Yield(()));
        panic::panic_any(CustomPayload { code: 11, text: "owner".to_string() });
    }));
    let payload = result.unwrap_err();
    assert_eq!(payload.downcast_ref::<CustomPayload>().map(|p| p.code), Some(11));
    assert_eq!(count.get(), 1);
    assert!(!std::thread::panicking());
    // The thread still runs coroutines normally.
    let mut d = Coroutine::<u8, u8, u8>::new(|y, a| y.suspend(a).wrapping_add(2));
    assert_eq!(d.resume(1), CoroutineResult::Yield(1));
    assert_eq!(d.resume(5), CoroutineResult::Return(7));
}

/// Dropping a suspended coroutine from inside another coroutine unwinds the
/// dropped one's stack, then control comes back to the dropping coroutine.
#[test]
fn drop_suspended_from_inside_a_coroutine() {
    let count = Rc::new(Cell::new(0));
    let c2 = count.clone();
    let mut outer = Coroutine::<(), usize, usize>::new(move |y, ()| {
        let c3 = c2.clone();
        let mut inner = Coroutine::<(), (), ()>::new(move |y, ()| {
            let _g = DropCounter(c3.clone());
            y.suspend(());
            unreachable!();
        });
        inner.resume(());
        y.suspend(c2.get());
        drop(inner);
        c2.get()
    });
    assert_eq!(outer.resume(()), CoroutineResult::Yield(0));
    assert_eq!(outer.resume(()), CoroutineResult::Return(1));
    assert_eq!(count.get(), 1);
}

// ---------------------------------------------------------------------------
// Nesting
// ---------------------------------------------------------------------------

/// Three levels of coroutines resuming coroutines, each suspending in the
/// middle: every level sees its own child's values and the main stack sees
/// the outermost's, in a fixed interleaving.
#[test]
fn three_levels_of_nested_resumes() {
    let trace = Rc::new(RefCell::new(Vec::<String>::new()));
    let t1 = trace.clone();
    let mut outer = Coroutine::<u32, u32, u32>::new(move |y1, a| {
        let t2 = t1.clone();
        let mut middle = Coroutine::<u32, u32, u32>::new(move |y2, b| {
            let t3 = t2.clone();
            let mut inner = Coroutine::<u32, u32, u32>::new(move |y3, c| {
                t3.borrow_mut().push(format!("inner got {c}"));
                let c = y3.suspend(c + 1);
                t3.borrow_mut().push(format!("inner got {c}"));
                c + 100
            });
            t2.borrow_mut().push(format!("middle got {b}"));
            let CoroutineResult::Yield(v) = inner.resume(b * 10) else { panic!("inner should yield") };
            let b = y2.suspend(v);
            t2.borrow_mut().push(format!("middle got {b}"));
            let CoroutineResult::Return(v) = inner.resume(b * 10) else { panic!("inner should return") };
            v
        });
        t1.borrow_mut().push(format!("outer got {a}"));
        let CoroutineResult::Yield(v) = middle.resume(a * 10) else { panic!("middle should yield") };
        let a = y1.suspend(v);
        t1.borrow_mut().push(format!("outer got {a}"));
        let CoroutineResult::Return(v) = middle.resume(a * 10) else { panic!("middle should return") };
        v
    });
    assert_eq!(outer.resume(1), CoroutineResult::Yield(101));
    assert_eq!(outer.resume(2), CoroutineResult::Return(300));
    assert_eq!(
        *trace.borrow(),
        ["outer got 1", "middle got 10", "inner got 100", "outer got 2", "middle got 20", "inner got 200"]
    );
}

/// A coroutine created (and even started) inside another coroutine outlives
/// its creator and is resumed later from the main stack.
#[test]
fn coroutine_created_inside_resumed_from_main() {
    let mut creator = Coroutine::<(), (), Coroutine<u32, u32, u32>>::new(|y, ()| {
        let mut child = Coroutine::<u32, u32, u32>::new(|y, x| {
            let x = y.suspend(x * 2);
            let x = y.suspend(x * 3);
            x * 4
        });
        // Started on the creator's watch, suspended inside it.
        assert_eq!(child.resume(1), CoroutineResult::Yield(2));
        y.suspend(());
        child
    });
    assert!(matches!(creator.resume(()), CoroutineResult::Yield(())));
    let CoroutineResult::Return(mut child) = creator.resume(()) else { panic!("creator should return") };
    assert!(creator.is_finished());
    drop(creator);
    assert_eq!(child.resume(5), CoroutineResult::Yield(15));
    assert_eq!(child.resume(7), CoroutineResult::Return(28));
}

/// A coroutine that is suspended inside one coroutine is resumed from a
/// different coroutine (its resumer changes between resumes).
#[test]
fn coroutine_resumed_by_different_resumers() {
    let shared = Rc::new(RefCell::new(Coroutine::<u32, u32, u32>::new(|y, mut x| {
        for _ in 0..3 {
            x = y.suspend(x + 1);
        }
        x
    })));
    let mut results = Vec::new();
    for i in 0..4 {
        let s = shared.clone();
        let mut resumer =
            Coroutine::<(), (), CoroutineResult<u32, u32>>::new(move |_, ()| s.borrow_mut().resume(i * 10));
        let CoroutineResult::Return(r) = resumer.resume(()) else { panic!("resumer should return") };
        results.push(r);
    }
    assert_eq!(
        results,
        [
            CoroutineResult::Yield(1),
            CoroutineResult::Yield(11),
            CoroutineResult::Yield(21),
            CoroutineResult::Return(30)
        ]
    );
}

// ---------------------------------------------------------------------------
// Backtraces
// ---------------------------------------------------------------------------

#[inline(never)]
fn inside_the_coroutine_marker() -> Backtrace {
    let bt = Backtrace::force_capture();
    black_box(bt)
}

#[inline(never)]
fn resumer_marker(c: &mut Coroutine<(), (), Backtrace>) -> Backtrace {
    let result = c.resume(());
    let CoroutineResult::Return(bt) = black_box(result) else { panic!("the coroutine should return") };
    bt
}

/// A backtrace taken inside a coroutine walks through the switch's CFI into
/// the resumer: both the coroutine's frame and the resumer's frame are
/// named, in that order (innermost first).
#[test]
fn backtrace_links_coroutine_to_resumer() {
    let mut c = Coroutine::<(), (), Backtrace>::new(|_, ()| inside_the_coroutine_marker());
    let text = resumer_marker(&mut c).to_string();
    let inside = text.find("inside_the_coroutine_marker");
    let resumer = text.find("resumer_marker");
    assert!(inside.is_some(), "the coroutine's frame is missing from:\n{text}");
    assert!(resumer.is_some(), "the resumer's frame is missing from:\n{text}");
    assert!(inside < resumer, "the coroutine's frame should come first:\n{text}");
    // The chain reaches the test function itself, past the resumer.
    assert!(text.contains("backtrace_links_coroutine_to_resumer"), "the walk stopped early:\n{text}");
}

// ---------------------------------------------------------------------------
// Stack sizes
// ---------------------------------------------------------------------------

fn build_with_stack(size: usize) -> io::Result<Coroutine<(), (), u32>> {
    Coroutine::<(), (), u32>::builder().stack_size(size).build(|_, ()| 5)
}

/// A zero-byte stack is rejected with InvalidInput, not rounded up.
#[test]
fn stack_size_zero_is_invalid_input() {
    let err = build_with_stack(0).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

/// Sizes whose rounding to a page (or adding the guard page) would overflow
/// are rejected with InvalidInput rather than wrapping to a tiny stack.
#[test]
fn stack_size_overflowing_the_rounding_is_invalid_input() {
    for size in [usize::MAX, usize::MAX - 4096, usize::MAX - 4095, usize::MAX / 2, 1 << 50] {
        let err = build_with_stack(size).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "size {size:#x}");
    }
}

/// A 1-byte request rounds up to at least MIN_STACK_SIZE, page-aligned, and
/// a coroutine runs (and suspends) on it.
#[test]
fn tiny_stack_rounds_up_and_works() {
    for size in [1, 100, 4095, 4097, MIN_STACK_SIZE - 1, MIN_STACK_SIZE + 1] {
        let mut c = Coroutine::<u32, u32, u32>::builder()
            .stack_size(size)
            .build(|y, x| y.suspend(x + 1) + 1)
            .expect("small sizes round up");
        assert!(c.stack_size() >= MIN_STACK_SIZE && c.stack_size() >= size, "size {size}");
        assert_eq!(c.stack_size() % 4096, 0);
        assert_eq!(c.resume(1), CoroutineResult::Yield(2));
        assert_eq!(c.resume(10), CoroutineResult::Return(11));
    }
}

/// A 1 MiB stack really provides its size: a coroutine can use a 512 KiB
/// array on it (and the array survives a suspend), even when this thread's
/// stack cache holds only a smaller stack (the cache must match sizes).
#[test]
fn one_mib_stack_holds_a_512_kib_array() {
    let mut small = Coroutine::<(), (), ()>::builder().stack_size(MIN_STACK_SIZE).build(|_, ()| {}).unwrap();
    assert_eq!(small.resume(()), CoroutineResult::Return(()));
    drop(small);
    #[inline(never)]
    fn use_big_array(y: &Yielder<(), u64>) -> u64 {
        let mut big = [0u8; 512 * 1024];
        for (i, b) in big.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let big = black_box(&mut big);
        y.suspend(big[511 * 1024] as u64);
        big.iter().map(|&b| b as u64).sum()
    }
    let mut c = Coroutine::<(), u64, u64>::builder().stack_size(1024 * 1024).build(|y, ()| use_big_array(y)).unwrap();
    assert_eq!(c.stack_size(), 1024 * 1024);
    assert_eq!(c.resume(()), CoroutineResult::Yield((511 * 1024 % 251) as u64));
    let expected: u64 = (0..512 * 1024).map(|i| (i % 251) as u64).sum();
    assert_eq!(c.resume(()), CoroutineResult::Return(expected));
}

// ---------------------------------------------------------------------------
// Stack reuse
// ---------------------------------------------------------------------------

/// 10 000 create/run/finish cycles, each suspending once, reuse cached
/// stacks without corrupting state: every cycle's values are exact, and
/// no stale frame from a previous coroutine leaks into the next.
#[test]
fn ten_thousand_cycles_through_the_stack_cache() {
    let mut finished = 0u32;
    for i in 0..10_000u32 {
        let mut c = Coroutine::<u32, u32, u32>::builder()
            .stack_size(32 * 1024)
            .build(move |y, a| {
                let local = [i; 16];
                let b = y.suspend(a.wrapping_mul(3) ^ i);
                black_box(&local).iter().fold(b, |acc, &x| acc.wrapping_add(x))
            })
            .unwrap();
        assert_eq!(c.resume(i), CoroutineResult::Yield(i.wrapping_mul(3) ^ i));
        assert_eq!(c.resume(i + 1), CoroutineResult::Return((i + 1).wrapping_add(i.wrapping_mul(16))));
        assert!(c.is_finished());
        finished += 1;
    }
    assert_eq!(finished, 10_000);
}

/// With several coroutines alive at once (each holding its own stack), then
/// finished, then recreated, no two live coroutines share a stack.
#[test]
fn live_coroutines_never_share_a_stack() {
    for round in 0..20u64 {
        let mut cs: Vec<_> = (0..50u64)
            .map(|k| {
                Coroutine::<(), u64, u64>::builder()
                    .stack_size(32 * 1024)
                    .build(move |y, ()| {
                        let mut mine = [round * 1000 + k; 64];
                        y.suspend(black_box(&mut mine)[0]);
                        black_box(&mine).iter().sum::<u64>() / 64
                    })
                    .unwrap()
            })
            .collect();
        for (k, c) in cs.iter_mut().enumerate() {
            assert_eq!(c.resume(()), CoroutineResult::Yield(round * 1000 + k as u64));
        }
        // Finish in reverse so stacks go back to the cache out of order.
        for (k, c) in cs.iter_mut().enumerate().rev() {
            assert_eq!(c.resume(()), CoroutineResult::Return(round * 1000 + k as u64));
        }
    }
}

/// With the stack cache disabled every coroutine maps and unmaps its own
/// stack; cycles still work (this runs on its own test thread, so the
/// setting does not leak into other tests).
#[test]
fn cache_capacity_zero_still_works() {
    weft::coroutine::set_thread_stack_cache_capacity(0);
    for i in 0..200u32 {
        let mut c = Coroutine::<u32, u32, u32>::new(move |y, a| y.suspend(i + a) + 1);
        assert_eq!(c.resume(1), CoroutineResult::Yield(i + 1));
        assert_eq!(c.resume(i), CoroutineResult::Return(i + 1));
    }
    weft::coroutine::set_thread_stack_cache_capacity(64);
}

// ---------------------------------------------------------------------------
// Floating-point control state
// ---------------------------------------------------------------------------

#[cfg(feature = "fp-control")]
mod fp {
    use super::*;
    #[allow(deprecated)]
    use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};

    const RC_MASK: u32 = 0x6000;
    const RC_TOWARD_ZERO: u32 = 0x6000;
    const FLAGS_MASK: u32 = 0x3f;
    const PRECISION_FLAG: u32 = 0x20;

    #[allow(deprecated)]
    fn mxcsr() -> u32 {
        // SAFETY: reading MXCSR has no preconditions on x86-64 (SSE is baseline).
        unsafe { _mm_getcsr() }
    }

    #[allow(deprecated)]
    fn set_mxcsr(value: u32) {
        // SAFETY: the values written are MXCSR values read earlier with only
        // the rounding-control or flag bits changed; no reserved bit is set.
        unsafe { _mm_setcsr(value) }
    }

    /// 1/10 computed at run time in the current rounding mode. In
    /// round-to-nearest it rounds up; toward zero it truncates, so the two
    /// differ in the last bit.
    fn tenth() -> f64 {
        black_box(1.0f64) / black_box(10.0f64)
    }

    const TENTH_NEAREST: f64 = 0.1;

    /// The rounding mode set inside a coroutine stays inside it: the
    /// resumer keeps round-to-nearest while the coroutine is suspended, and
    /// the coroutine gets round-toward-zero back when resumed.
    #[test]
    fn mxcsr_rounding_mode_is_per_context() {
        let default = mxcsr();
        assert_eq!(default & RC_MASK, 0, "the test thread starts in round-to-nearest");
        assert_eq!(tenth(), TENTH_NEAREST);
        let mut c = Coroutine::<(), (u32, f64), (u32, f64)>::new(|y, ()| {
            let saved = mxcsr();
            set_mxcsr((saved & !RC_MASK) | RC_TOWARD_ZERO);
            let first = (mxcsr(), tenth());
            y.suspend(first);
            let second = (mxcsr(), tenth());
            y.suspend(second);
            let third = (mxcsr(), tenth());
            set_mxcsr(saved);
            third
        });
        for round in 0..3 {
            let (csr, value) = match c.resume(()) {
                CoroutineResult::Yield(v) | CoroutineResult::Return(v) => v,
            };
            assert_eq!(csr & RC_MASK, RC_TOWARD_ZERO, "round {round}: the coroutine lost its rounding mode");
            assert!(value < TENTH_NEAREST, "round {round}: {value} was not truncated");
            assert_eq!(mxcsr() & RC_MASK, 0, "round {round}: the resumer's rounding mode changed");
            assert_eq!(tenth(), TENTH_NEAREST, "round {round}: resumer rounds wrongly");
        }
        assert!(c.is_finished());
        assert_eq!(mxcsr() & !FLAGS_MASK, default & !FLAGS_MASK);
    }

    /// Sticky exception flags raised on either side (an inexact division)
    /// never change the control bits either side sees, and do not make the
    /// switch reload a stale mode.
    #[test]
    fn sticky_flags_do_not_disturb_control_bits() {
        let default = mxcsr();
        let mut c = Coroutine::<(), u32, u32>::new(|y, ()| {
            let saved = mxcsr();
            set_mxcsr((saved & !RC_MASK & !FLAGS_MASK) | RC_TOWARD_ZERO);
            for _ in 0..5 {
                black_box(tenth()); // raises the precision (inexact) flag
                assert_ne!(mxcsr() & PRECISION_FLAG, 0);
                y.suspend(mxcsr());
                // The resumer dirtied its own flags meanwhile.
                assert_eq!(mxcsr() & RC_MASK, RC_TOWARD_ZERO);
                assert!(tenth() < TENTH_NEAREST);
            }
            set_mxcsr(saved);
            mxcsr()
        });
        for _ in 0..5 {
            set_mxcsr(mxcsr() & !FLAGS_MASK);
            let CoroutineResult::Yield(inside) = c.resume(()) else { panic!("should yield") };
            assert_eq!(inside & RC_MASK, RC_TOWARD_ZERO);
            assert_eq!(mxcsr() & !FLAGS_MASK, default & !FLAGS_MASK, "resumer's control bits changed");
            black_box(tenth());
            assert_ne!(mxcsr() & PRECISION_FLAG, 0);
            assert_eq!(tenth(), TENTH_NEAREST);
        }
        let CoroutineResult::Return(last) = c.resume(()) else { panic!("should return") };
        assert_eq!(last & !FLAGS_MASK, default & !FLAGS_MASK);
        assert_eq!(mxcsr() & !FLAGS_MASK, default & !FLAGS_MASK);
    }

    fn x87_control_word() -> u16 {
        let mut cw: u16 = 0;
        // SAFETY: fnstcw stores the x87 control word into the given u16.
        unsafe { std::arch::asm!("fnstcw [{}]", in(reg) &mut cw, options(nostack)) };
        cw
    }

    fn set_x87_control_word(cw: u16) {
        // SAFETY: fldcw loads a control word read earlier with only the
        // rounding-control bits changed.
        unsafe { std::arch::asm!("fldcw [{}]", in(reg) &cw, options(nostack)) };
    }

    /// The x87 control word (rounding control bits) set inside a coroutine
    /// does not leak to the resumer and comes back to the coroutine.
    #[test]
    fn x87_control_word_is_per_context() {
        const X87_RC_MASK: u16 = 0x0c00;
        let default = x87_control_word();
        let mut c = Coroutine::<(), u16, u16>::new(|y, ()| {
            let saved = x87_control_word();
            set_x87_control_word(saved | X87_RC_MASK);
            y.suspend(x87_control_word());
            let after = x87_control_word();
            set_x87_control_word(saved);
            after
        });
        let CoroutineResult::Yield(inside) = c.resume(()) else { panic!("should yield") };
        assert_eq!(inside & X87_RC_MASK, X87_RC_MASK);
        assert_eq!(x87_control_word(), default, "the resumer's x87 control word changed");
        let CoroutineResult::Return(after) = c.resume(()) else { panic!("should return") };
        assert_eq!(after & X87_RC_MASK, X87_RC_MASK, "the coroutine lost its x87 control word");
        assert_eq!(x87_control_word(), default);
    }
}

/// A coroutine that suspends from a destructor while unwinding a panic cannot
/// be unwound again on drop (that would abort): dropping it leaks its stack,
/// and the process carries on.
#[test]
fn drop_of_coroutine_suspended_while_panicking_leaks_instead_of_aborting() {
    use weft::coroutine::Yielder;
    struct SuspendOnDrop<'a>(&'a Yielder<(), bool>);
    impl Drop for SuspendOnDrop<'_> {
        fn drop(&mut self) {
            self.0.suspend(std::thread::panicking());
        }
    }
    let mut c = Coroutine::<(), bool, ()>::new(|y, ()| {
        let _s = SuspendOnDrop(y);
        panic!("unwinding through a destructor that suspends");
    });
    assert_eq!(c.resume(()), CoroutineResult::Yield(true));
    drop(c);
    // Still alive, and coroutines still work on this thread.
    let mut d = Coroutine::<(), (), u8>::new(|_, ()| 5);
    assert_eq!(d.resume(()), CoroutineResult::Return(5));
}
