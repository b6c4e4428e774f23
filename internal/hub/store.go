package hub

import (
	"context"
	"errors"
	"time"
)

// ErrClosed is returned once the hub or its store is shutting down.
var ErrClosed = errors.New("closed")

// Broker carries committed messages between the nodes of a cluster, once per node rather than
// once per subscriber. A node announces what it published; the broker hands every node the
// messages of the channels it watches by calling that node's Hub.Dispatch, in any order (the hub
// restores offset order). A single node has no broker.
type Broker interface {
	// Announce tells the other nodes about messages this node has just stored.
	Announce(ctx context.Context, msgs []Message) error
	// Watch and Unwatch say when this node gains its first and loses its last subscriber of
	// a channel. Watch returns once the node will receive the channel's later messages.
	Watch(ctx context.Context, channel string) error
	Unwatch(channel string)
}

// Retention bounds a channel's history; the hub resolves it from the channel's namespace.
type Retention struct {
	Size int           // most messages kept; 0 keeps none
	Age  time.Duration // oldest kept; 0 means no age limit
}

// Append is one publication on its way into the store.
type Append struct {
	Publication
	Retention Retention
	Time      time.Time
	// DedupWindow is how long IdempotencyKey is remembered.
	DedupWindow time.Duration
}

// Appended is the store's answer for one Append.
type Appended struct {
	Message   Message
	Duplicate bool // the idempotency key was seen: Message is the first publish's
	Err       error
}

// ChannelState is where a channel's history stands.
type ChannelState struct {
	Epoch  string
	Offset uint64 // the latest offset assigned; 0 before the first message
}

// History is a slice of a channel's history.
type History struct {
	ChannelState
	Messages []Message
	// Gap is set when messages after the requested offset are no longer held, or the requested
	// epoch is not the channel's.
	Gap bool
}

// Store keeps offsets, epochs and history. Append is durable when it returns, and assigns each
// channel's offsets gap-free in the order of the batch.
type Store interface {
	Append(ctx context.Context, batch []Append) ([]Appended, error)
	// Read returns up to limit messages with offset > after in epoch, oldest first (limit <= 0:
	// all held). An epoch other than the channel's reads from the oldest held message with Gap.
	Read(ctx context.Context, channel, epoch string, after uint64, limit int) (History, error)
	// Latest returns the newest limit messages.
	Latest(ctx context.Context, channel string, limit int) (History, error)
	State(ctx context.Context, channel string) (ChannelState, error)
	// Clear drops a channel's history and gives it a new epoch.
	Clear(ctx context.Context, channel string) (ChannelState, error)
	Close() error
}
