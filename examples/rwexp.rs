use std::sync::Arc;
use std::time::Instant;
use weft::sync::Mutex;

fn main() {
    let workers: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let rt = weft::Runtime::builder().workers(workers).build().unwrap();
    for _ in 0..5 {
        let m = Arc::new(Mutex::new(0u64));
        let before = rt.metrics().total;
        let t = Instant::now();
        let m2 = m.clone();
        rt.block_on(move || {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let m = m2.clone();
                    weft::spawn(move || {
                        for _ in 0..2_000_000u64 {
                            *m.lock() += 1;
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        });
        let el = t.elapsed();
        let a = rt.metrics();
        let started: Vec<u64> = a.workers.iter().map(|w| w.started).collect();
        let a = a.total;
        println!(
            "{:.1} ns/incr parks {} sleeps {} remote {} local {} switches {} started {:?}",
            el.as_nanos() as f64 / 4e6,
            a.parks - before.parks,
            a.sleeps - before.sleeps,
            a.remote_wakes - before.remote_wakes,
            a.local_wakes - before.local_wakes,
            a.switches - before.switches,
            started
        );
        assert_eq!(*m.lock(), 4_000_000);
    }
}
