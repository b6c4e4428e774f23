//go:build !linux

package bench

import (
	"context"
	"errors"
)

// The generator drives its sockets with epoll and reads /proc: Linux only.

var errNotLinux = errors.New("crier bench: needs Linux (epoll, /proc)")

var transports = map[string]func(*options) any{"ws": nil, "sse": nil}

func run(context.Context, *options) (*Report, error) { return nil, errNotLinux }

func runFloor(context.Context, int, int, int) (*FloorRun, error) { return nil, errNotLinux }
