//go:build race

package server

// raceEnabled tells tests that the race detector runs: timings stretch and memory grows.
const raceEnabled = true
