// Package layers holds no code: its test checks the module's import rules
// (RATIONALE.md, "Structure") on the packages `go list` reports, and fails
// on any import that breaks them unless it is a known violation listed in
// the test, and on any listed violation that has gone.
package layers
