use weft::coroutine::{Coroutine, CoroutineResult};
fn main() {
    let mut c = Coroutine::new(|y, mut i: u64| {
        let mut t = 0;
        while i != 0 {
            t += i;
            i = y.suspend(t);
        }
        t * 10
    });
    println!("{:?}", c.resume(1));
    println!("{:?}", c.resume(2));
    println!("{:?}", c.resume(0));
    let mut c = Coroutine::<u64, u64, ()>::new(|y, _| {
        loop {
            y.suspend(1);
        }
    });
    let n = 10_000_000u64;
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(c.resume(0));
    }
    println!("{:.2} ns/round trip", t.elapsed().as_nanos() as f64 / n as f64);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut c = Coroutine::<(), (), ()>::new(|_, _| panic!("boom"));
        c.resume(());
    }));
    println!("panic caught: {:?}", r.err().and_then(|p| p.downcast_ref::<&str>().map(|s| s.to_string())));
    struct D(&'static str);
    impl Drop for D {
        fn drop(&mut self) {
            println!("dropped {}", self.0);
        }
    }
    let mut c = Coroutine::<(), (), ()>::new(|y, _| {
        let _d = D("local");
        y.suspend(());
        unreachable!()
    });
    assert!(matches!(c.resume(()), CoroutineResult::Yield(())));
    drop(c);
    println!("ok");
}
