// goclient — an independent gRPC client (grpc-go, Debian's
// golang-google-grpc-dev) for tests/blackbox/test_grpc_conformance.py.
// Messages go as raw bytes (a pass-through codec named "proto"), so no
// generated code is needed; the test builds the requests.
//
//	goclient deadline ADDR N            ListUsers with 100µs, 1ms and 2ms deadlines, N each
//	goclient burst ADDR OVER BURST       OVER over-limit CreateUser calls, then BURST concurrent
//	                                     health checks, all on one connection
//	goclient twomsg ADDR                 GetUser (unary) sent two request messages
//	goclient lists ADDR N                N ListUsers calls one after the other, no deadline
//
// Prints one JSON object: the count of each status code seen.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// varint-length-delimited field
func field(num int, b []byte) []byte {
	out := []byte{byte(num<<3 | 2)}
	n := len(b)
	for n >= 0x80 {
		out = append(out, byte(n)|0x80)
		n >>= 7
	}
	out = append(out, byte(n))
	return append(out, b...)
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: goclient deadline|burst ADDR ...")
		os.Exit(2)
	}
	dial := func() *grpc.ClientConn {
		conn, err := grpc.Dial(os.Args[2], grpc.WithInsecure(), grpc.WithBlock(),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}), grpc.MaxCallSendMsgSize(64<<20)))
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			os.Exit(1)
		}
		return conn
	}
	conn := dial()
	defer func() { conn.Close() }()
	counts := map[string]int{}
	var mu sync.Mutex
	count := func(err error) {
		mu.Lock()
		counts[status.Code(err).String()]++
		if c := status.Code(err).String(); c != "OK" && c != "DeadlineExceeded" {
			fmt.Fprintln(os.Stderr, err)
		}
		mu.Unlock()
	}
	switch os.Args[1] {
	case "deadline", "lists":
		n, _ := strconv.Atoi(os.Args[3])
		desc := &grpc.StreamDesc{StreamName: "ListUsers", ServerStreams: true}
		req := []byte{0x10, 0x64} // limit: 100
		deadlines := []time.Duration{100 * time.Microsecond, time.Millisecond, 2 * time.Millisecond}
		if os.Args[1] == "lists" {
			deadlines = []time.Duration{time.Minute}
		}
		for _, d := range deadlines {
			// one connection per deadline: each call that expires is a
			// RST_STREAM, and a few hundred in a second on one connection
			// is what the server's rapid-reset guard counts
			conn.Close()
			conn = dial()
			for i := 0; i < n; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), d)
				st, err := conn.NewStream(ctx, desc, "/bazaar.v1.UserService/ListUsers")
				if err == nil {
					err = st.SendMsg(&req)
				}
				if err == nil {
					err = st.CloseSend()
				}
				for err == nil {
					var m []byte
					err = st.RecvMsg(&m)
				}
				if err.Error() == "EOF" {
					err = nil
				}
				count(err)
				cancel()
			}
		}
	case "burst":
		over, _ := strconv.Atoi(os.Args[3])
		burst, _ := strconv.Atoi(os.Args[4])
		big := field(2, make([]byte, 5<<20)) // CreateUserRequest.name: 5 MiB
		for i := 0; i < over; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var out []byte
			count(conn.Invoke(ctx, "/bazaar.v1.UserService/CreateUser", &big, &out))
			cancel()
		}
		var wg sync.WaitGroup
		for i := 0; i < burst; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				in := []byte{}
				var out []byte
				count(conn.Invoke(ctx, "/grpc.health.v1.Health/Check", &in, &out))
			}()
		}
		wg.Wait()
	case "twomsg":
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := conn.NewStream(ctx, &grpc.StreamDesc{StreamName: "GetUser", ClientStreams: true},
			"/bazaar.v1.UserService/GetUser")
		one, two := []byte{0x08, 0x01}, []byte{0x08, 0x02}
		if err == nil {
			err = st.SendMsg(&one)
		}
		if err == nil {
			err = st.SendMsg(&two)
		}
		if err == nil {
			err = st.CloseSend()
		}
		if err == nil {
			var m []byte
			err = st.RecvMsg(&m)
		}
		count(err)
	}
	json.NewEncoder(os.Stdout).Encode(counts)
}
