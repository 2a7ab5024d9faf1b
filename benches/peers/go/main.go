// Command weftpeers runs the workloads of weft's examples/versus_threads/
// (the weft column), examples/skynet.rs and benches/channel.rs on
// goroutines, Go's sync package and Go's channels, for comparison only.
// See README.md.
//
//	go build -o weftpeers . && GOMAXPROCS=2 ./weftpeers [-quick] [-json PATH]
//
// Every figure is the median of 5 runs (3 for memory and skynet). Every run
// checks its results; the last line is "check: ok" only if all passed.
// With -json PATH the rows go to PATH as one object (see report and row
// below, and README.md); run.sh combines one such object per GOMAXPROCS.
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
	// benches/channel.rs' workloads: items of the 4p4c batch and of a
	// select batch.
	chanPCItems, selectItems uint64
}

var full = sizes{
	runs: 5, costlyRuns: 3,
	yieldTurns: 1_000_000, chanTurns: 500_000, condTurns: 500_000,
	spawns: 100_000, parked: 10_000,
	incrementsPerTask: 2_000_000, itemsPerProducer: 100_000,
	rwOpsPerTask: 100_000, leaves: 1_000_000,
	chanPCItems: 1_000_000, selectItems: 400_000,
}

var quick = sizes{
	runs: 3, costlyRuns: 3,
	yieldTurns: 100_000, chanTurns: 50_000, condTurns: 50_000,
	spawns: 10_000, parked: 2_000,
	incrementsPerTask: 200_000, itemsPerProducer: 10_000,
	rwOpsPerTask: 20_000, leaves: 100_000,
	chanPCItems: 200_000, selectItems: 100_000,
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

// medianOf runs f `runs` times; it returns the median and every run's
// value, in the order they ran.
func medianOf(runs int, f func() float64) (float64, []float64) {
	results := make([]float64, 0, runs)
	fmt.Fprint(os.Stderr, " run")
	for run := 1; run <= runs; run++ {
		fmt.Fprintf(os.Stderr, " %d/%d", run, runs)
		results = append(results, f())
	}
	return median(results), results
}

// median of a non-empty slice, which it leaves as it was.
func median(values []float64) float64 {
	sorted := append([]float64(nil), values...)
	sort.Float64s(sorted)
	return sorted[len(sorted)/2]
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

// mutexTasks: how many goroutines contendedMutex runs, one per P but at
// least 2, so that a GOMAXPROCS=1,2,4,8,16 series measures contention at
// each width (weft's row: 2 coroutines on 2 workers).
func mutexTasks(procs int) int {
	if procs < 2 {
		return 2
	}
	return procs
}

// contendedMutex: `tasks` goroutines each add 1 to a Mutex-guarded counter
// `perTask` times; ns per increment, once all are running.
func contendedMutex(tasks int, perTask uint64) float64 {
	var mu sync.Mutex
	var counter uint64
	line := newStartLine(tasks)
	ivs := make([]interval, tasks)
	var wg sync.WaitGroup
	for t := 0; t < tasks; t++ {
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
	total := uint64(tasks) * perTask
	verify(counter == total, "contended Mutex: no increment lost")
	return nanosPer(span(ivs), total)
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

// selectWays: the channels one select waits on (benches/channel.rs).
const selectWays = 4

// selectReceive: `selectWays` goroutines each send their share of `items`
// distinct numbers on their own channel of capacity `cap`; one goroutine
// receives them all with a select over the four channels, and sums them.
// ns per completed select (the span of all five goroutines / items). The
// channels stay open until the selector is done (a closed channel would be
// always ready). As benches/channel.rs' `select 4 ...` batches.
func selectReceive(cap int, items uint64) float64 {
	chans := make([]chan uint64, selectWays)
	for i := range chans {
		chans[i] = make(chan uint64, cap)
	}
	line := newStartLine(selectWays + 1)
	ivs := make([]interval, selectWays+1)
	var wg sync.WaitGroup
	for p := 0; p < selectWays; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			s := line.arrive()
			ch := chans[p]
			for item := uint64(p); item < items; item += selectWays {
				ch <- item
			}
			ivs[p] = interval{s, time.Now()}
		}(p)
	}
	var sum uint64
	wg.Add(1)
	go func() {
		defer wg.Done()
		s := line.arrive()
		c0, c1, c2, c3 := chans[0], chans[1], chans[2], chans[3]
		for got := uint64(0); got < items; got++ {
			select {
			case v := <-c0:
				sum += v
			case v := <-c1:
				sum += v
			case v := <-c2:
				sum += v
			case v := <-c3:
				sum += v
			}
		}
		ivs[selectWays] = interval{s, time.Now()}
	}()
	wg.Wait()
	verify(sum == items*(items-1)/2, "select: every item received exactly once")
	return nanosPer(span(ivs), items)
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

// figure is a float64 that JSON-encodes NaN and ±Inf (a failed memory
// run) as null, which encoding/json refuses to write for a float64.
type figure float64

func (f figure) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(v)
}

func figures(values []float64) []figure {
	out := make([]figure, len(values))
	for i, v := range values {
		out[i] = figure(v)
	}
	return out
}

// row is one workload's result. Key names the versus_threads row it
// matches where there is one (same unit); Value is the median of Runs.
type row struct {
	Key            string   `json:"key"`
	Workload       string   `json:"workload"`
	Value          figure   `json:"value"`
	Unit           string   `json:"unit"`
	HigherIsBetter bool     `json:"higher_is_better"`
	Runs           []figure `json:"runs"`
	Note           string   `json:"note"`
}

// report is what -json writes: one GOMAXPROCS setting's rows.
type report struct {
	Tool       string `json:"tool"`
	GoVersion  string `json:"go_version"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Mode       string `json:"mode"`
	NProc      int    `json:"nproc"`
	UnixTime   int64  `json:"unix_time"`
	ChecksOK   bool   `json:"checks_ok"`
	Rows       []row  `json:"rows"`
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

// count formats 1234567 as "1 234 567", like versus_threads' notes.
func count(n uint64) string {
	digits := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, d := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteByte(' ')
		}
		b.WriteRune(d)
	}
	return b.String()
}

func main() {
	quickFlag := flag.Bool("quick", false, "short mode (a few seconds)")
	jsonPath := flag.String("json", "", "also write the rows as one JSON object to `PATH`")
	memoryChild := flag.Int("memory-child", 0, "internal: measure parked memory with N goroutines and print it")
	only := flag.String("only", "", "run only the rows whose keys are in this comma-separated `LIST` (as versus_threads --only)")
	flag.Parse()
	wanted := func(key string) bool {
		if *only == "" {
			return true
		}
		for _, k := range strings.Split(*only, ",") {
			if k == key {
				return true
			}
		}
		return false
	}

	if *memoryChild > 0 {
		rss, rt := parkedMemory(*memoryChild)
		status := "ok"
		if atomic.LoadInt64(&failedChecks) != 0 {
			status = "failed"
		}
		fmt.Printf("%g %g %s\n", rss, rt, status)
		return
	}

	s, mode := full, "full"
	if *quickFlag {
		s, mode = quick, "quick"
	}
	began := time.Now()
	procs, cpus := runtime.GOMAXPROCS(0), runtime.NumCPU()
	fmt.Printf("weftpeers: versus_threads' workloads on goroutines (%s, %s/%s)\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Printf("GOMAXPROCS=%d (NumCPU %d)\n", procs, cpus)
	if procs > cpus {
		fmt.Printf("note: GOMAXPROCS=%d > %d CPUs: oversubscribed, Ps share cores\n", procs, cpus)
	}

	var rows []row
	step, steps := 0, 14
	// measure fills r's Value and Runs from `runs` runs of f.
	measure := func(r row, runs int, f func() float64) {
		step++
		if !wanted(r.Key) {
			return
		}
		begun := time.Now()
		fmt.Fprintf(os.Stderr, "[%d/%d] %s:", step, steps, r.Workload)
		v, all := medianOf(runs, f)
		fmt.Fprintf(os.Stderr, " (%.1f s)\n", time.Since(begun).Seconds())
		r.Value, r.Runs = figure(v), figures(all)
		rows = append(rows, r)
	}

	measure(row{
		Key: "handoff_yield", Workload: "hand-off latency, Gosched, GOMAXPROCS=1", Unit: "ns/hand-off",
		Note: fmt.Sprintf("2 goroutines x %s turns through an atomic counter, each runtime.Gosched()ing until it is "+
			"its turn, always with GOMAXPROCS set to 1 (weft: yield_now on a 1-worker runtime, rows handoff_pinned "+
			"and handoff_unpinned)", count(s.yieldTurns)),
	}, s.runs, func() float64 { return goschedHandoff(s.yieldTurns) })
	measure(row{
		Key: "channel_handoff", Workload: "hand-off latency, unbuffered channels", Unit: "ns/hand-off",
		Note: fmt.Sprintf("2 goroutines ping-pong a counter through two unbuffered channels, %s round trips, at "+
			"GOMAXPROCS=%d; Go's idiomatic hand-off (no versus_threads row)", count(s.chanTurns), procs),
	}, s.runs, func() float64 { return channelHandoff(s.chanTurns) })
	measure(row{
		Key: "spawn_join", Workload: "spawn+join, per goroutine", Unit: "µs/task",
		Note: fmt.Sprintf("%s empty goroutines each store their index in a result slice, then a sync.WaitGroup "+
			"joins them; the sum is checked; GOMAXPROCS=%d", count(s.spawns), procs),
	}, s.runs, func() float64 { return spawnJoin(s.spawns) })
	// Both memory figures come from the same child processes.
	var rtFigures []float64
	measure(row{
		Key: "parked_memory", Workload: "memory per parked goroutine (VmRSS)", Unit: "KiB/task",
		Note: fmt.Sprintf("VmRSS growth with %s goroutines blocked on a channel receive, each run in a fresh "+
			"child process (no stack or g reused from an earlier run)", count(uint64(s.parked))),
	}, s.costlyRuns, func() float64 {
		rss, rt := memoryRun(s.parked)
		rtFigures = append(rtFigures, rt)
		return rss
	})
	step++
	if wanted("parked_memory") {
		rows = append(rows, row{
			Key: "parked_memory_runtime", Workload: "memory per parked goroutine (Stack+HeapInuse)",
			Value: figure(median(rtFigures)), Unit: "KiB/task", Runs: figures(rtFigures),
			Note: "runtime.MemStats StackInuse+HeapInuse growth per goroutine (the runtime's own view), from the " +
				"same child processes as parked_memory",
		})
	}
	measure(row{
		Key: "condvar_handoff", Workload: "Mutex+Cond hand-off", Unit: "ns/hand-off",
		Note: fmt.Sprintf("2 goroutines x %s turns through a sync.Mutex-guarded counter and one sync.Cond, at "+
			"GOMAXPROCS=%d (weft: 1 worker, so compare with GOMAXPROCS=1)", count(s.condTurns), procs),
	}, s.runs, func() float64 { return condHandoff(s.condTurns) })
	tasks := mutexTasks(procs)
	shared := ""
	if procs == 1 {
		shared = "; here the two share one P and hardly contend"
	}
	measure(row{
		Key: "contended_mutex", Workload: fmt.Sprintf("contended Mutex (%d goroutines = GOMAXPROCS, min 2)", tasks),
		Unit: "ns/increment",
		Note: fmt.Sprintf("%d goroutines (GOMAXPROCS, at least 2) x %s increments of one sync.Mutex-guarded "+
			"counter, timed from a common start line, at GOMAXPROCS=%d (weft: 2 coroutines on 2 workers, so "+
			"compare with GOMAXPROCS=2%s)", tasks, count(s.incrementsPerTask), procs, shared),
	}, s.runs, func() float64 { return contendedMutex(tasks, s.incrementsPerTask) })
	measure(row{
		Key: "pc_channel", Workload: "producer-consumer, buffered chan", Unit: "M items/s", HigherIsBetter: true,
		Note: fmt.Sprintf("%d producers, %d consumers, a chan uint64 of capacity %d, %s items, every item counted "+
			"and summed, at GOMAXPROCS=%d; Go's idiomatic bounded queue (no versus_threads row)",
			producers, consumers, capacity, count(producers*s.itemsPerProducer), procs),
	}, s.runs, func() float64 {
		return producerConsumer(make(goChannel, capacity), s.itemsPerProducer) / 1e6
	})
	measure(row{
		Key: "pc_condvar", Workload: "producer-consumer, Mutex+2 Cond", Unit: "M items/s", HigherIsBetter: true,
		Note: fmt.Sprintf("the same through a %d-slot ring buffer under a sync.Mutex with notFull and notEmpty "+
			"sync.Conds, at GOMAXPROCS=%d", capacity, procs),
	}, s.runs, func() float64 {
		return producerConsumer(newCondQueue(), s.itemsPerProducer) / 1e6
	})
	measure(row{
		Key: "readers_writers", Workload: "readers-writers (95 % reads)", Unit: "M ops/s", HigherIsBetter: true,
		Note: fmt.Sprintf("%d goroutines x %s operations on a sync.RWMutex-guarded 8-slot table, one in %d a write; "+
			"every read checks the slots are equal; GOMAXPROCS=%d", rwTasks, count(s.rwOpsPerTask), writeEvery, procs),
	}, s.runs, func() float64 { return readersWriters(s.rwOpsPerTask) / 1e6 })
	// benches/channel.rs' workloads (no versus_threads row): the 4p4c
	// batch at 1 000 000 items, and the two select batches.
	measure(row{
		Key: "chan_pc", Workload: "channel 4p4c cap 64, 1M items", Unit: "M items/s", HigherIsBetter: true,
		Note: fmt.Sprintf("%d producers, %d consumers, a chan uint64 of capacity %d, %s items, every item counted "+
			"and summed, at GOMAXPROCS=%d (benches/channel.rs: pc 4p4c cap 64 1M)",
			producers, consumers, capacity, count(s.chanPCItems), procs),
	}, s.runs, func() float64 {
		return producerConsumer(make(goChannel, capacity), s.chanPCItems/producers) / 1e6
	})
	measure(row{
		Key: "chan_select_rendezvous", Workload: "select over 4 unbuffered chans", Unit: "ns/select",
		Note: fmt.Sprintf("%d goroutines each send their share of %s items on their own unbuffered chan; one "+
			"goroutine receives them all with a 4-case select; per completed select, at GOMAXPROCS=%d "+
			"(benches/channel.rs: select 4 rendezvous)", selectWays, count(s.selectItems), procs),
	}, s.runs, func() float64 { return selectReceive(0, s.selectItems) })
	measure(row{
		Key: "chan_select_cap64", Workload: "select over 4 buffered chans (cap 64)", Unit: "ns/select",
		Note: fmt.Sprintf("the same with chans of capacity 64, at GOMAXPROCS=%d (benches/channel.rs: select 4 "+
			"cap 64)", procs),
	}, s.runs, func() float64 { return selectReceive(64, s.selectItems) })
	measure(row{
		Key: "skynet", Workload: "skynet", Unit: "µs/leaf",
		Note: fmt.Sprintf("%s leaves (%s goroutines), each parent spawning 10 children and summing their results "+
			"from a buffered channel; GOMAXPROCS=%d", count(s.leaves), count((s.leaves*10-1)/9), procs),
	}, s.costlyRuns, func() float64 { return skynetPerLeaf(s.leaves) })

	fmt.Println()
	fmt.Printf("%-52s %10s  %s\n", "workload", "go", "unit")
	for _, r := range rows {
		fmt.Printf("%-52s %10s  %s\n", r.Workload, threeDigits(float64(r.Value)), r.Unit)
	}
	fmt.Printf("GOMAXPROCS=%d; medians of %d runs (%d for memory and skynet); %d spawns, %d parked, %d skynet leaves\n",
		procs, s.runs, s.costlyRuns, s.spawns, s.parked, s.leaves)

	failed := atomic.LoadInt64(&failedChecks)
	if *jsonPath != "" {
		rep := report{
			Tool: "weft-go-peer", GoVersion: runtime.Version(), GOMAXPROCS: procs, Mode: mode,
			NProc: cpus, UnixTime: began.Unix(), ChecksOK: failed == 0, Rows: rows,
		}
		data, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(*jsonPath, append(data, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "weftpeers: cannot write %s: %v\n", *jsonPath, err)
			os.Exit(1)
		}
	}
	if failed != 0 {
		fmt.Printf("check: FAILED (%d checks)\n", failed)
		os.Exit(1)
	}
	fmt.Println("check: ok")
}
