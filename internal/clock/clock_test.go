package clock

import (
	"testing"
	"time"
)

func TestVirtualFiresInDeadlineOrder(t *testing.T) {
	start := time.Unix(1000, 0)
	v := NewVirtual(start)
	late := v.After(3 * time.Second)
	early := v.After(1 * time.Second)
	v.Advance(500 * time.Millisecond)
	select {
	case <-early:
		t.Fatal("timer fired before its deadline")
	default:
	}
	if at, ok := v.Next(); !ok || !at.Equal(start.Add(time.Second)) {
		t.Fatalf("Next = %v, %v; want %v", at, ok, start.Add(time.Second))
	}
	v.Advance(5 * time.Second)
	if got := <-early; !got.Equal(start.Add(time.Second)) {
		t.Fatalf("early fired at %v", got)
	}
	if got := <-late; !got.Equal(start.Add(3 * time.Second)) {
		t.Fatalf("late fired at %v", got)
	}
	if got := v.Now(); !got.Equal(start.Add(5500 * time.Millisecond)) {
		t.Fatalf("Now = %v", got)
	}
	if _, ok := v.Next(); ok {
		t.Fatal("no timers should remain")
	}
}

func TestVirtualAfterNonPositiveFiresAtOnce(t *testing.T) {
	v := NewVirtual(time.Unix(0, 0))
	select {
	case <-v.After(0):
	default:
		t.Fatal("After(0) did not fire at once")
	}
}

func TestWallNowMoves(t *testing.T) {
	var c Clock = Wall{}
	a := c.Now()
	<-c.After(time.Millisecond)
	if !c.Now().After(a) {
		t.Fatal("wall clock did not move")
	}
}
