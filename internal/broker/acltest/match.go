package acltest

import "strings"

// Matches reports whether an MQTT topic filter matches a topic name (MQTT
// 3.1.1 section 4.7, without the $-topic rule). It is the naive reference
// the policy tests compare against.
func Matches(filter, topic string) bool {
	f := strings.Split(filter, "/")
	n := strings.Split(topic, "/")
	for i, seg := range f {
		if seg == "#" {
			return i == len(f)-1
		}
		if i >= len(n) {
			return false
		}
		if seg != "+" && seg != n[i] {
			return false
		}
	}
	return len(f) == len(n)
}
