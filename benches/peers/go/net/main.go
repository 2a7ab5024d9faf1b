// Go peer of weft's network benchmark (benches/report/net.sh): the minimal
// HTTP/1.1 server (net + bufio, hand-parsed, pipelining-safe; or net/http),
// an echo server, an echo load client and an idle-connection client.
// For comparison only; not part of CI.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"
)

var response = []byte("HTTP/1.1 200 OK\r\nServer: weft\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!")

func main() {
	mode := flag.String("mode", "http-raw", "http-raw | http | echo | echo-client | idle-client")
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on or connect to")
	conns := flag.Int("conns", 100, "connections (clients)")
	size := flag.Int("size", 64, "message size (echo-client)")
	duration := flag.Duration("duration", 10*time.Second, "run time (echo-client)")
	asJSON := flag.Bool("json", false, "echo-client: print one JSON line instead of text")
	flag.Parse()
	switch *mode {
	case "http-raw":
		serve(*addr, serveRaw)
	case "echo":
		serve(*addr, serveEcho)
	case "http":
		l := listen(*addr)
		http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h["Server"] = []string{"weft"}
			h["Content-Type"] = []string{"text/plain"}
			h["Content-Length"] = []string{"13"}
			h["Date"] = nil
			w.Write([]byte("Hello, World!"))
		}))
	case "echo-client":
		echoClient(*addr, *conns, *size, *duration, *asJSON)
	case "idle-client":
		idleClient(*addr, *conns)
	default:
		fmt.Fprintln(os.Stderr, "unknown -mode", *mode)
		os.Exit(2)
	}
}

func listen(addr string) net.Listener {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		panic(err)
	}
	fmt.Printf("listening on %s\n", l.Addr())
	return l
}

func serve(addr string, handle func(net.Conn)) {
	l := listen(addr)
	for {
		c, err := l.Accept()
		if err != nil {
			panic(err)
		}
		go handle(c)
	}
}

// serveRaw answers every complete request in the buffer, in order, with one
// write per read (the same loop as weft's http_hello).
func serveRaw(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 0, 4096)
	chunk := make([]byte, 4096)
	out := make([]byte, 0, 4096)
	for {
		n, err := c.Read(chunk)
		if n == 0 || err != nil {
			return
		}
		buf = append(buf, chunk[:n]...)
		for {
			end := bytes.Index(buf, []byte("\r\n\r\n"))
			if end < 0 {
				break
			}
			buf = buf[end+4:]
			out = append(out, response...)
		}
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				return
			}
			out = out[:0]
		}
		if len(buf) == 0 {
			buf = buf[:0:cap(buf)]
		}
	}
}

func serveEcho(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 16*1024)
	for {
		n, err := c.Read(buf)
		if n == 0 || err != nil {
			return
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

// echoClient: each connection (one goroutine) ping-pongs `size`-byte
// messages for `duration`: write one, read exactly `size` bytes back,
// compare them (the first byte changes every round, so a stale or repeated
// answer is caught). Every 16th round trip's latency is kept for the
// percentiles. Prints the round trips per second and p50/p99, as text or
// as one JSON line (-json). A connection that fails or gets wrong bytes
// ends the program with status 1.
func echoClient(addr string, conns, size int, duration time.Duration, asJSON bool) {
	var wg sync.WaitGroup
	lat := make([][]time.Duration, conns)
	counts := make([]int64, conns)
	fail := func(format string, args ...interface{}) {
		fmt.Fprintf(os.Stderr, "echo-client: "+format+"\n", args...)
		os.Exit(1)
	}
	deadline := time.Now().Add(duration)
	start := time.Now()
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				fail("connection %d: %v", i, err)
			}
			defer c.Close()
			msg := make([]byte, size)
			back := make([]byte, size)
			for k := range msg {
				msg[k] = byte(i + k)
			}
			for round := 0; time.Now().Before(deadline); round++ {
				msg[0] = byte(round)
				t := time.Now()
				if _, err := c.Write(msg); err != nil {
					fail("connection %d, round %d: write: %v", i, round, err)
				}
				if _, err := io.ReadFull(c, back); err != nil {
					fail("connection %d, round %d: read: %v", i, round, err)
				}
				if !bytes.Equal(msg, back) {
					fail("connection %d, round %d: the echo differs from what was sent", i, round)
				}
				if round%16 == 0 {
					lat[i] = append(lat[i], time.Since(t))
				}
				counts[i]++
			}
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	var total int64
	for _, n := range counts {
		total += n
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return all[int(p*float64(len(all)-1))].Seconds() * 1e3
	}
	if !asJSON {
		fmt.Printf("%d connections, %d-byte messages, %.2f s: %d round trips, %.0f/s, p50 %.3f ms, p99 %.3f ms\n",
			conns, size, elapsed, total, float64(total)/elapsed, pct(0.50), pct(0.99))
		return
	}
	json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"round_trips": total, "seconds": elapsed, "per_second": float64(total) / elapsed,
		"p50_ms": pct(0.50), "p99_ms": pct(0.99), "conns": conns, "size": size,
	})
}

// idleClient opens `conns` keep-alive connections, sends one GET on each,
// reads the answer, prints "ready N" and holds them until stdin closes. A
// connection that fails (too few file descriptors, the server's backlog)
// ends the program with status 1, saying how many were open.
func idleClient(addr string, conns int) {
	held := make([]net.Conn, 0, conns)
	req := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "idle-client: connection %d: %s: %v (%d open)\n", len(held), what, err, len(held))
		os.Exit(1)
	}
	for i := 0; i < conns; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fail("dial", err)
		}
		if _, err := c.Write(req); err != nil {
			fail("write", err)
		}
		r := bufio.NewReader(c)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			fail("read", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			fail("answer", fmt.Errorf("status %d", resp.StatusCode))
		}
		held = append(held, c)
	}
	fmt.Println("ready " + strconv.Itoa(len(held)))
	io.Copy(io.Discard, os.Stdin)
}
