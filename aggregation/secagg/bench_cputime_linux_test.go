//go:build linux

package secagg

import (
	"time"

	"golang.org/x/sys/unix"
)

// threadCPU is the CPU time consumed so far by the calling OS thread (the
// benchmarks lock their goroutine to one), or 0 if the clock is unavailable.
// Unlike wall time it does not count time the thread spent waiting for a
// core, which on a shared machine is most of the noise.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
