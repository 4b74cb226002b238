package herald_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	herald "github.com/herald-broker/herald/sdks/go"
)

// testServer is a real `herald serve` process started for one test.
type testServer struct {
	t        *testing.T
	bin      string
	addr     string
	dataDir  string
	extra    []string
	cmd      *exec.Cmd
	exited   chan struct{}
	Endpoint string
}

// heraldBin is $HERALD_BIN or <repo root>/target/debug/herald.
func heraldBin(t *testing.T) string {
	if b := os.Getenv("HERALD_BIN"); b != "" {
		return b
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "target", "debug", "herald")
}

// startServer starts herald on a free port with a temp data dir, waits for
// SERVING and stops it when the test ends.
func startServer(t *testing.T, extra ...string) *testServer {
	t.Helper()
	s := newServer(t, freeAddr(t), extra...)
	s.start()
	t.Cleanup(s.stop)
	return s
}

// newServer prepares a server on addr without starting it.
func newServer(t *testing.T, addr string, extra ...string) *testServer {
	t.Helper()
	bin := heraldBin(t)
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no herald binary at %s (set HERALD_BIN, or cargo build -p herald-cli): %v", bin, err)
	}
	return &testServer{t: t, bin: bin, addr: addr, dataDir: t.TempDir(), extra: extra, Endpoint: "http://" + addr}
}

// freeAddr is a loopback address nothing listens on (right now).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func (s *testServer) start() {
	s.t.Helper()
	if err := s.spawn(); err != nil {
		s.t.Fatal(err)
	}
	s.waitServing()
}

// spawn starts the process without waiting for it to serve (callable from
// any goroutine).
func (s *testServer) spawn() error {
	args := append([]string{"serve", "--listen", s.addr, "--data-dir", s.dataDir, "--log-level", "warn", "--metrics-listen", "off"}, s.extra...)
	s.cmd = exec.Command(s.bin, args...)
	s.cmd.Stdout = os.Stderr
	s.cmd.Stderr = os.Stderr
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("cannot start %s: %w", s.bin, err)
	}
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(s.cmd, s.exited)
	return nil
}

func (s *testServer) waitServing() {
	s.t.Helper()
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			s.t.Fatalf("herald exited during start-up")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("herald at %s not SERVING within 20 s", s.addr)
}

// stop terminates the server (SIGTERM, then SIGKILL after 10 s).
func (s *testServer) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT) // in case a test froze it
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// kill ends the server abruptly.
func (s *testServer) kill() {
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// restart starts the server again on the same port and data dir.
func (s *testServer) restart() { s.start() }

// dial connects a client with a fast reconnect policy.
func (s *testServer) dial(t *testing.T, opts ...herald.ClientOption) *herald.Client {
	t.Helper()
	return dialEndpoint(t, s.Endpoint, opts...)
}

// fastReconnect is the tests' reconnect policy: 50 ms doubling to 500 ms.
var fastReconnect = herald.ReconnectPolicy{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond, Multiplier: 2, Jitter: 0.2}

// dialEndpoint connects a client to endpoint with a fast reconnect policy.
func dialEndpoint(t *testing.T, endpoint string, opts ...herald.ClientOption) *herald.Client {
	t.Helper()
	opts = append([]herald.ClientOption{herald.WithReconnectPolicy(fastReconnect)}, opts...)
	c, err := herald.Dial(context.Background(), endpoint, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// signal sends sig to the running server.
func (s *testServer) signal(sig os.Signal) {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(sig)
	}
}

// uniq is a fresh name for a topic or subscription.
func uniq(t *testing.T, prefix string) string {
	return fmt.Sprintf("%s.%d", prefix, time.Now().UnixNano())
}
