package main

import (
	"testing"
	"time"
)

func TestStampRoundTrip(t *testing.T) {
	for _, size := range []int{16, 100, 1024} {
		data := stamped(size, 123456789)
		if len(data) != size {
			t.Fatalf("size %d: got %d bytes", size, len(data))
		}
		at, ok := readStamp(data)
		if !ok || at != 123456789 {
			t.Fatalf("size %d: stamp %d %v", size, at, ok)
		}
	}
	if _, ok := readStamp(stamped(10, 5)); ok {
		t.Fatal("a 10-byte event has no room for a stamp")
	}
}

func TestOpenLoopStampsIntendedTimes(t *testing.T) {
	clk := clock{base: time.Now()}
	s := newSchedule(clk, 1000, 50*time.Millisecond) // one event per ms
	time.Sleep(10 * time.Millisecond)                // fall behind by ~10 events
	got := s.take(100)
	if len(got) < 5 {
		t.Fatalf("a late publisher should get the overdue events at once, got %d", len(got))
	}
	for i, at := range got {
		if want := s.start + int64(i)*int64(time.Millisecond); at != want {
			t.Fatalf("event %d stamped %d, intended %d", i, at, want)
		}
	}
	n := len(got)
	for {
		b := s.take(100)
		if len(b) == 0 {
			break
		}
		n += len(b)
	}
	if n < 40 || n > 50 {
		t.Fatalf("50 ms at 1000/s should hand out about 50 events, got %d", n)
	}
}

func TestClosedLoopEndsAtDuration(t *testing.T) {
	clk := clock{base: time.Now()}
	s := newSchedule(clk, 0, 20*time.Millisecond)
	if got := s.take(7); len(got) != 7 {
		t.Fatalf("closed loop hands out what is asked, got %d", len(got))
	}
	time.Sleep(25 * time.Millisecond)
	if got := s.take(7); len(got) != 0 {
		t.Fatalf("nothing after the duration, got %d", len(got))
	}
}
