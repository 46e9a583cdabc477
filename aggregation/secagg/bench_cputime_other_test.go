//go:build !linux

package secagg

import "time"

// threadCPU is not measured on this platform; the *-cpu-ms metrics are left out.
func threadCPU() time.Duration { return 0 }
