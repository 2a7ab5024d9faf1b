// Command weftpeers runs the workloads of weft's examples/versus_threads.rs
// (the weft column) and examples/skynet.rs on goroutines and Go's sync
// package, for comparison only. See README.md.
//
//	go build -o weftpeers . && GOMAXPROCS=2 ./weftpeers [-quick] [-json PATH]
//
// Every figure is the median of 5 runs (3 for memory and skynet). Every run
// checks its results; the last line is "check: ok" only if all passed.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	capacity   = 64 // producer-consumer buffer
	producers  = 4
	consumers  = 4
	rwTasks    = 8
	writeEvery = 20 // one op in 20 is a write (5 %)
)

type sizes struct {
	runs, costlyRuns                    int
	yieldTurns, chanTurns, condTurns    uint64
	spawns                              uint64
	parked                              int
	incrementsPerTask, itemsPerProducer uint64
	rwOpsPerTask, leaves                uint64
}

var full = sizes{
	runs: 5, costlyRuns: 3,
	yieldTurns: 1_000_000, chanTurns: 500_000, condTurns: 500_000,
	spawns: 100_000, parked: 10_000,
	incrementsPerTask: 2_000_000, itemsPerProducer: 100_000,
	rwOpsPerTask: 100_000, leaves: 1_000_000,
}

var quick = sizes{
	runs: 3, costlyRuns: 3,
	yieldTurns: 100_000, chanTurns: 50_000, condTurns: 50_000,
	spawns: 10_000, parked: 2_000,
	incrementsPerTask: 200_000, itemsPerProducer: 10_000,
	rwOpsPerTask: 20_000, leaves: 100_000,
}

// ---------------------------------------------------------------------------
// Checks, medians, progress
// ---------------------------------------------------------------------------

var failedChecks int64

func verify(ok bool, what string) {
	if !ok {
		atomic.AddInt64(&failedChecks, 1)
		fmt.Fprintf(os.Stderr, "\ncheck failed: %s\n", what)
	}
}

func medianOf(runs int, f func() float64) float64 {
	results := make([]float64, 0, runs)
	fmt.Fprint(os.Stderr, " run")
	for run := 1; run <= runs; run++ {
		fmt.Fprintf(os.Stderr, " %d/%d", run, runs)
		results = append(results, f())
	}
	sort.Float64s(results)
	return results[len(results)/2]
}

func nanosPer(d time.Duration, n uint64) float64 { return float64(d.Nanoseconds()) / float64(n) }

// startLine lets n goroutines begin the measured part together: spin for
// 20 ms (so idle Ps pick up the others), then yield (so goroutines sharing
// a P can all arrive). Mirrors versus_threads' StartLine.
type startLine struct {
	ready     int64
	tasks     int64
	spinUntil time.Time
}

func newStartLine(tasks int) *startLine {
	return &startLine{tasks: int64(tasks), spinUntil: time.Now().Add(20 * time.Millisecond)}
}

func (s *startLine) arrive() time.Time {
	atomic.AddInt64(&s.ready, 1)
	for atomic.LoadInt64(&s.ready) < s.tasks {
		if time.Now().After(s.spinUntil) {
			runtime.Gosched()
		}
	}
	return time.Now()
}

type interval struct{ start, end time.Time }

// span: from the first start to the last end.
func span(ivs []interval) time.Duration {
	first, last := ivs[0].start, ivs[0].end
	for _, iv := range ivs[1:] {
		if iv.start.Before(first) {
			first = iv.start
		}
		if iv.end.After(last) {
			last = iv.end
		}
	}
	return last.Sub(first)
}

// ---------------------------------------------------------------------------
// The workloads
// ---------------------------------------------------------------------------

// goschedHandoff: two goroutines with GOMAXPROCS=1 take `turns` turns each
// through a counter (even: goroutine 0's turn), calling runtime.Gosched
// until it is theirs; ns per hand-off. As weft's yield_now hand-off on a
// 1-worker runtime.
func goschedHandoff(turns uint64) float64 {
	old := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(old)
	var handoffs uint64
	var wg sync.WaitGroup
	start := time.Now()
	for me := uint64(0); me < 2; me++ {
		wg.Add(1)
		go func(me uint64) {
			defer wg.Done()
			for i := uint64(0); i < turns; i++ {
				for atomic.LoadUint64(&handoffs)%2 != me {
					runtime.Gosched()
				}
				atomic.AddUint64(&handoffs, 1)
			}
		}(me)
	}
	wg.Wait()
	elapsed := time.Since(start)
	verify(atomic.LoadUint64(&handoffs) == 2*turns, "Gosched hand-off: every turn taken")
	return nanosPer(elapsed, 2*turns)
}

// channelHandoff: two goroutines ping-pong a counter through two unbuffered
// channels, `turns` sends each; ns per hand-off (at the process's GOMAXPROCS).
func channelHandoff(turns uint64) float64 {
	ping, pong := make(chan uint64), make(chan uint64)
	done := make(chan uint64)
	start := time.Now()
	go func() {
		var n uint64
		for i := uint64(0); i < turns; i++ {
			n = <-ping
			pong <- n + 1
		}
		done <- n
	}()
	var n uint64
	for i := uint64(0); i < turns; i++ {
		ping <- n + 1
		n = <-pong
	}
	<-done
	elapsed := time.Since(start)
	verify(n == 2*turns, "channel hand-off: every turn taken")
	return nanosPer(elapsed, 2*turns)
}

// spawnJoin: `tasks` empty goroutines each store their index in a result
// slice; a WaitGroup joins them; µs per goroutine.
func spawnJoin(tasks uint64) float64 {
	start := time.Now()
	results := make([]uint64, tasks)
	var wg sync.WaitGroup
	wg.Add(int(tasks))
	for i := uint64(0); i < tasks; i++ {
		go func(i uint64) {
			results[i] = i
			wg.Done()
		}(i)
	}
	wg.Wait()
	var sum uint64
	for _, r := range results {
		sum += r
	}
	elapsed := time.Since(start)
	verify(sum == tasks*(tasks-1)/2, "spawn+join: the sum of the goroutines' results")
	return nanosPer(elapsed, tasks) / 1e3
}

func vmRSSKiB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return math.NaN()
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(strings.TrimPrefix(line, "VmRSS:"))
			if len(f) > 0 {
				v, err := strconv.ParseFloat(f[0], 64)
				if err == nil {
					return v
				}
			}
		}
	}
	return math.NaN()
}

func runtimeInuseKiB() float64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.StackInuse+m.HeapInuse) / 1024
}

// parkedMemory parks `tasks` goroutines on a channel receive and returns
// (VmRSS growth, StackInuse+HeapInuse growth) per goroutine, in KiB. Run in
// a fresh child process (see memoryChild), so that no earlier goroutine's
// stack or g is reused.
func parkedMemory(tasks int) (float64, float64) {
	gate := make(chan struct{})
	var started int64
	var wg sync.WaitGroup
	runtime.GC()
	beforeRSS, beforeRT := vmRSSKiB(), runtimeInuseKiB()
	wg.Add(tasks)
	for i := 0; i < tasks; i++ {
		go func() {
			atomic.AddInt64(&started, 1)
			<-gate
			wg.Done()
		}()
	}
	for atomic.LoadInt64(&started) < int64(tasks) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(30 * time.Millisecond) // let the last ones park
	afterRSS, afterRT := vmRSSKiB(), runtimeInuseKiB()
	parked := runtime.NumGoroutine()
	close(gate)
	wg.Wait()
	verify(parked >= tasks, "parked goroutines: all alive while measured")
	return (afterRSS - beforeRSS) / float64(tasks), (afterRT - beforeRT) / float64(tasks)
}

// memoryRun runs parkedMemory in a fresh copy of this program.
func memoryRun(tasks int) (float64, float64) {
	self, err := os.Executable()
	if err != nil {
		verify(false, "memory: os.Executable: "+err.Error())
		return math.NaN(), math.NaN()
	}
	out, err := exec.Command(self, "-memory-child", strconv.Itoa(tasks)).Output()
	if err != nil {
		verify(false, "memory: child process: "+err.Error())
		return math.NaN(), math.NaN()
	}
	var rss, rt float64
	var ok string
	if _, err := fmt.Sscan(string(out), &rss, &rt, &ok); err != nil || ok != "ok" {
		verify(false, fmt.Sprintf("memory: child process output %q", out))
	}
	return rss, rt
}

// condHandoff: two goroutines take turns through a Mutex-guarded counter
// and one Cond (even: goroutine 0's turn); ns per hand-off.
func condHandoff(turns uint64) float64 {
	var mu sync.Mutex
	changed := sync.NewCond(&mu)
	var count uint64
	var wg sync.WaitGroup
	start := time.Now()
	for me := uint64(0); me < 2; me++ {
		wg.Add(1)
		go func(me uint64) {
			defer wg.Done()
			for i := uint64(0); i < turns; i++ {
				mu.Lock()
				for count%2 != me {
					changed.Wait()
				}
				count++
				mu.Unlock()
				changed.Signal()
			}
		}(me)
	}
	wg.Wait()
	elapsed := time.Since(start)
	verify(count == 2*turns, "Mutex+Cond hand-off: every turn taken")
	return nanosPer(elapsed, 2*turns)
}

// contendedMutex: 2 goroutines each add 1 to a Mutex-guarded counter
// `perTask` times; ns per increment, once both are running.
func contendedMutex(perTask uint64) float64 {
	var mu sync.Mutex
	var counter uint64
	line := newStartLine(2)
	ivs := make([]interval, 2)
	var wg sync.WaitGroup
	for t := 0; t < 2; t++ {
		wg.Add(1)
		go func(t int) {
			defer wg.Done()
			s := line.arrive()
			for i := uint64(0); i < perTask; i++ {
				mu.Lock()
				counter++
				mu.Unlock()
			}
			ivs[t] = interval{s, time.Now()}
		}(t)
	}
	wg.Wait()
	verify(counter == 2*perTask, "contended Mutex: no increment lost")
	return nanosPer(span(ivs), 2*perTask)
}

// channel: a bounded buffer of `capacity` items.
type channel interface {
	put(uint64)
	take() uint64
}

// goChannel: a buffered Go channel.
type goChannel chan uint64

func (c goChannel) put(item uint64) { c <- item }
func (c goChannel) take() uint64    { return <-c }

// condQueue: a ring buffer under a Mutex with notFull and notEmpty Conds.
type condQueue struct {
	mu                sync.Mutex
	notFull, notEmpty *sync.Cond
	items             [capacity]uint64
	head, len         int
}

func newCondQueue() *condQueue {
	q := &condQueue{}
	q.notFull = sync.NewCond(&q.mu)
	q.notEmpty = sync.NewCond(&q.mu)
	return q
}

func (q *condQueue) put(item uint64) {
	q.mu.Lock()
	for q.len == capacity {
		q.notFull.Wait()
	}
	q.items[(q.head+q.len)%capacity] = item
	q.len++
	q.mu.Unlock()
	q.notEmpty.Signal()
}

func (q *condQueue) take() uint64 {
	q.mu.Lock()
	for q.len == 0 {
		q.notEmpty.Wait()
	}
	item := q.items[q.head]
	q.head = (q.head + 1) % capacity
	q.len--
	q.mu.Unlock()
	q.notFull.Signal()
	return item
}

// producerConsumer: `producers` goroutines put distinct items 0..total,
// `consumers` take their shares and sum them; items per second.
func producerConsumer(ch channel, perProducer uint64) float64 {
	total := producers * perProducer
	var pwg, cwg sync.WaitGroup
	counts := make([]uint64, consumers)
	sums := make([]uint64, consumers)
	start := time.Now()
	for p := uint64(0); p < producers; p++ {
		pwg.Add(1)
		go func(p uint64) {
			defer pwg.Done()
			for item := p * perProducer; item < (p+1)*perProducer; item++ {
				ch.put(item)
			}
		}(p)
	}
	for c := uint64(0); c < consumers; c++ {
		share := total / consumers
		if c < total%consumers {
			share++
		}
		cwg.Add(1)
		go func(c, share uint64) {
			defer cwg.Done()
			var n, sum uint64
			for i := uint64(0); i < share; i++ {
				sum += ch.take()
				n++
			}
			counts[c], sums[c] = n, sum
		}(c, share)
	}
	pwg.Wait()
	cwg.Wait()
	elapsed := time.Since(start)
	var n, sum uint64
	for c := range counts {
		n += counts[c]
		sum += sums[c]
	}
	verify(n == total && sum == total*(total-1)/2, "producer-consumer: every item taken exactly once")
	return float64(total) / elapsed.Seconds()
}

// readersWriters: `rwTasks` goroutines each do `ops` operations on one
// RWMutex-guarded table, one in `writeEvery` a write; ops per second.
func readersWriters(ops uint64) float64 {
	var mu sync.RWMutex
	var slots [8]uint64
	var writes uint64
	line := newStartLine(rwTasks)
	ivs := make([]interval, rwTasks)
	torn := make([]uint64, rwTasks)
	var wg sync.WaitGroup
	for t := 0; t < rwTasks; t++ {
		wg.Add(1)
		go func(t int) {
			defer wg.Done()
			s := line.arrive()
			var bad uint64
			for op := uint64(0); op < ops; op++ {
				if op%writeEvery == writeEvery-1 {
					mu.Lock()
					next := slots[0] + 1
					for i := range slots {
						slots[i] = next
					}
					writes++
					mu.Unlock()
				} else {
					mu.RLock()
					for i := range slots {
						if slots[i] != slots[0] {
							bad++
							break
						}
					}
					mu.RUnlock()
				}
			}
			ivs[t], torn[t] = interval{s, time.Now()}, bad
		}(t)
	}
	wg.Wait()
	elapsed := span(ivs)
	var bad uint64
	for _, b := range torn {
		bad += b
	}
	want := uint64(rwTasks) * (ops / writeEvery)
	allWant := true
	for _, s := range slots {
		allWant = allWant && s == want
	}
	verify(bad == 0, "readers-writers: no torn read")
	verify(writes == want && allWant, "readers-writers: every write applied once")
	return float64(rwTasks*ops) / elapsed.Seconds()
}

// skynet: each node spawns ten child goroutines down to single leaves, each
// leaf returning its index, and sums their results (sent on a channel).
func skynet(out chan<- uint64, num, size uint64) {
	if size == 1 {
		out <- num
		return
	}
	step := size / 10
	children := make(chan uint64, 10)
	for i := uint64(0); i < 10; i++ {
		go skynet(children, num+i*step, step)
	}
	var sum uint64
	for i := 0; i < 10; i++ {
		sum += <-children
	}
	out <- sum
}

func skynetPerLeaf(leaves uint64) float64 {
	out := make(chan uint64, 1)
	start := time.Now()
	go skynet(out, 0, leaves)
	sum := <-out
	elapsed := time.Since(start)
	verify(sum == leaves*(leaves-1)/2, "skynet: the root's sum")
	return nanosPer(elapsed, leaves) / 1e3
}

// ---------------------------------------------------------------------------
// Rows and output
// ---------------------------------------------------------------------------

type row struct {
	Workload string  `json:"workload"`
	Go       float64 `json:"go"`
	Unit     string  `json:"unit"`
}

// threeDigits formats like versus_threads: about 3 significant digits.
func threeDigits(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "NaN"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

func main() {
	quickFlag := flag.Bool("quick", false, "short mode (a few seconds)")
	jsonPath := flag.String("json", "", "also write the rows as JSON to `PATH`")
	memoryChild := flag.Int("memory-child", 0, "internal: measure parked memory with N goroutines and print it")
	flag.Parse()

	if *memoryChild > 0 {
		rss, rt := parkedMemory(*memoryChild)
		status := "ok"
		if atomic.LoadInt64(&failedChecks) != 0 {
			status = "failed"
		}
		fmt.Printf("%g %g %s\n", rss, rt, status)
		return
	}

	s := full
	if *quickFlag {
		s = quick
	}
	procs := runtime.GOMAXPROCS(0)
	fmt.Printf("weftpeers: versus_threads' workloads on goroutines (%s, %s/%s)\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Printf("GOMAXPROCS=%d (NumCPU %d)\n", procs, runtime.NumCPU())

	var rows []row
	step, steps := 0, 11
	measure := func(workload, unit string, runs int, f func() float64) {
		step++
		begun := time.Now()
		fmt.Fprintf(os.Stderr, "[%d/%d] %s:", step, steps, workload)
		v := medianOf(runs, f)
		fmt.Fprintf(os.Stderr, " (%.1f s)\n", time.Since(begun).Seconds())
		rows = append(rows, row{workload, v, unit})
	}

	measure("hand-off latency, Gosched, GOMAXPROCS=1", "ns/hand-off", s.runs, func() float64 { return goschedHandoff(s.yieldTurns) })
	measure("hand-off latency, unbuffered channels", "ns/hand-off", s.runs, func() float64 { return channelHandoff(s.chanTurns) })
	measure("spawn+join, per goroutine", "µs/task", s.runs, func() float64 { return spawnJoin(s.spawns) })
	// Both memory figures come from the same child processes.
	var rtFigures []float64
	measure("memory per parked goroutine (VmRSS)", "KiB/task", s.costlyRuns, func() float64 {
		rss, rt := memoryRun(s.parked)
		rtFigures = append(rtFigures, rt)
		return rss
	})
	step++
	sort.Float64s(rtFigures)
	rows = append(rows, row{"memory per parked goroutine (Stack+HeapInuse)", rtFigures[len(rtFigures)/2], "KiB/task"})
	measure("Mutex+Cond hand-off", "ns/hand-off", s.runs, func() float64 { return condHandoff(s.condTurns) })
	measure("contended Mutex (2 goroutines)", "ns/increment", s.runs, func() float64 { return contendedMutex(s.incrementsPerTask) })
	measure("producer-consumer, buffered chan", "M items/s", s.runs, func() float64 {
		return producerConsumer(make(goChannel, capacity), s.itemsPerProducer) / 1e6
	})
	measure("producer-consumer, Mutex+2 Cond", "M items/s", s.runs, func() float64 {
		return producerConsumer(newCondQueue(), s.itemsPerProducer) / 1e6
	})
	measure("readers-writers (95 % reads)", "M ops/s", s.runs, func() float64 { return readersWriters(s.rwOpsPerTask) / 1e6 })
	measure("skynet", "µs/leaf", s.costlyRuns, func() float64 { return skynetPerLeaf(s.leaves) })

	fmt.Println()
	fmt.Printf("%-46s %10s  %s\n", "workload", "go", "unit")
	for _, r := range rows {
		fmt.Printf("%-46s %10s  %s\n", r.Workload, threeDigits(r.Go), r.Unit)
	}
	fmt.Printf("GOMAXPROCS=%d; medians of %d runs (%d for memory and skynet); %d spawns, %d parked, %d skynet leaves\n",
		procs, s.runs, s.costlyRuns, s.spawns, s.parked, s.leaves)

	if *jsonPath != "" {
		data, err := json.MarshalIndent(rows, "", "  ")
		if err == nil {
			err = os.WriteFile(*jsonPath, append(data, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "weftpeers: cannot write %s: %v\n", *jsonPath, err)
			os.Exit(1)
		}
	}
	if n := atomic.LoadInt64(&failedChecks); n != 0 {
		fmt.Printf("check: FAILED (%d checks)\n", n)
		os.Exit(1)
	}
	fmt.Println("check: ok")
}
