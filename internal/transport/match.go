package transport

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidTopic is returned for topic names or filters that MQTT 3.1.1
// does not allow.
var ErrInvalidTopic = errors.New("invalid topic")

// maxTopicLen is MQTT's limit on the UTF-8 length of a topic.
const maxTopicLen = 65535

// ValidateTopic checks a topic name for publishing: non-empty, no wildcards,
// no NUL, at most 65535 bytes.
func ValidateTopic(topic string) error {
	if topic == "" || len(topic) > maxTopicLen {
		return fmt.Errorf("%w: length %d", ErrInvalidTopic, len(topic))
	}
	if strings.ContainsAny(topic, "+#\x00") {
		return fmt.Errorf("%w: %q contains a wildcard or NUL", ErrInvalidTopic, topic)
	}
	return nil
}

// ValidateFilter checks a subscription filter: '+' must fill a whole level
// and '#' must be the whole last level.
func ValidateFilter(filter string) error {
	if filter == "" || len(filter) > maxTopicLen || strings.ContainsRune(filter, 0) {
		return fmt.Errorf("%w: filter %q", ErrInvalidTopic, filter)
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("%w: '#' not last in %q", ErrInvalidTopic, filter)
		case l != "#" && l != "+" && strings.ContainsAny(l, "+#"):
			return fmt.Errorf("%w: wildcard inside a level of %q", ErrInvalidTopic, filter)
		}
	}
	return nil
}

// Match reports whether topic (a topic name) matches filter (a valid
// subscription filter) by MQTT's rules: '+' matches exactly one level, a
// trailing '#' matches the parent level and everything below it, and
// wildcards in the first level do not match topics starting with '$'.
func Match(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		f, fRest, fMore := strings.Cut(filter, "/")
		if f == "#" {
			return true
		}
		t, tRest, tMore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		switch {
		case !fMore && !tMore:
			return true
		case !tMore:
			// Topic ended; "a/#" still matches "a".
			return fMore && fRest == "#"
		case !fMore:
			return false
		}
		filter, topic = fRest, tRest
	}
}
