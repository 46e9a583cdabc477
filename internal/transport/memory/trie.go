package memory

import "strings"

// trie indexes subscription filters by level so that routing a publish
// costs the depth of the topic, not the number of subscriptions.
type trie struct{ root *node }

type node struct {
	children map[string]*node
	sessions map[*session]struct{}
}

func newTrie() trie { return trie{root: &node{}} }

func (t trie) add(filter string, s *session) {
	n := t.root
	for _, level := range strings.Split(filter, "/") {
		if n.children == nil {
			n.children = make(map[string]*node)
		}
		child := n.children[level]
		if child == nil {
			child = &node{}
			n.children[level] = child
		}
		n = child
	}
	if n.sessions == nil {
		n.sessions = make(map[*session]struct{})
	}
	n.sessions[s] = struct{}{}
}

// remove deletes s from filter and prunes empty nodes.
func (t trie) remove(filter string, s *session) {
	levels := strings.Split(filter, "/")
	path := make([]*node, 0, len(levels)+1)
	n := t.root
	path = append(path, n)
	for _, level := range levels {
		n = n.children[level]
		if n == nil {
			return
		}
		path = append(path, n)
	}
	delete(n.sessions, s)
	for i := len(levels) - 1; i >= 0; i-- {
		child := path[i+1]
		if len(child.sessions) > 0 || len(child.children) > 0 {
			return
		}
		delete(path[i].children, levels[i])
	}
}

// match calls fn once for every session with a filter matching topic.
func (t trie) match(topic string, fn func(*session)) {
	levels := strings.Split(topic, "/")
	seen := make(map[*session]struct{})
	visit := func(n *node) {
		for s := range n.sessions {
			if _, ok := seen[s]; !ok {
				seen[s] = struct{}{}
				fn(s)
			}
		}
	}
	var walk func(n *node, i int)
	walk = func(n *node, i int) {
		wild := !(i == 0 && strings.HasPrefix(topic, "$"))
		if wild {
			if h := n.children["#"]; h != nil {
				visit(h)
			}
		}
		if i == len(levels) {
			visit(n)
			return
		}
		if c := n.children[levels[i]]; c != nil {
			walk(c, i+1)
		}
		if wild {
			if c := n.children["+"]; c != nil {
				walk(c, i+1)
			}
		}
	}
	walk(t.root, 0)
}
