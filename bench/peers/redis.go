package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	redisStream   = "bench"
	redisGroup    = "bench"
	redisConsumer = "bench-0"
	redisField    = "d"
)

// redisBroker: one stream, one consumer group created before publishing.
// Producers pipeline XADDs (one entry each) on their own connection; the
// consumer reads with XREADGROUP COUNT fetch BLOCK and acks each read batch
// with one XACK of all its ids.
type redisBroker struct {
	o       options
	clients []*redis.Client
}

func newRedis(o options) (*redisBroker, error) {
	b := &redisBroker{o: o}
	c := b.client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A group left by an earlier run on the same server is reused.
	err := c.XGroupCreateMkStream(ctx, redisStream, redisGroup, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return nil, fmt.Errorf("XGROUP CREATE: %w", err)
	}
	return b, nil
}

func (b *redisBroker) client() *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr:         b.o.addr,
		PoolSize:     1,
		ReadTimeout:  30 * time.Second,
		WriteTimeout: 30 * time.Second,
	})
	b.clients = append(b.clients, c)
	return c
}

func (b *redisBroker) close() {
	for _, c := range b.clients {
		_ = c.Close()
	}
}

type redisProducer struct {
	c    *redis.Client
	size int
}

func (b *redisBroker) producer(int) (producer, error) {
	c := b.client()
	if err := c.Ping(context.Background()).Err(); err != nil {
		return nil, err
	}
	return &redisProducer{c: c, size: b.o.size}, nil
}

// send: one pipeline of len(stamps) XADDs (the schedule gives at most a
// window of them), waiting for all replies: a connection has at most a
// window in flight.
func (p *redisProducer) send(stamps []int64, acked func(int64, error)) error {
	ctx := context.Background()
	pipe := p.c.Pipeline()
	cmds := make([]*redis.StringCmd, len(stamps))
	for i, at := range stamps {
		cmds[i] = pipe.XAdd(ctx, &redis.XAddArgs{
			Stream: redisStream,
			Values: []any{redisField, stamped(p.size, at)},
		})
	}
	// Exec's own error repeats the first failed command's, counted below.
	_, _ = pipe.Exec(ctx)
	for i, cmd := range cmds {
		acked(stamps[i], cmd.Err())
	}
	return nil
}

func (p *redisProducer) flush() {}
func (p *redisProducer) close() {}

func (b *redisBroker) consume(stop <-chan struct{}, got func(int64, bool)) error {
	c := b.client()
	ctx := context.Background()
	ids := make([]string, 0, b.o.fetch)
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		streams, err := c.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group:    redisGroup,
			Consumer: redisConsumer,
			Streams:  []string{redisStream, ">"},
			Count:    int64(b.o.fetch),
			Block:    100 * time.Millisecond,
		}).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return fmt.Errorf("XREADGROUP: %w", err)
		}
		ids = ids[:0]
		for _, s := range streams {
			for _, m := range s.Messages {
				data, _ := m.Values[redisField].(string)
				stamp, ok := readStamp([]byte(data))
				got(stamp, ok)
				ids = append(ids, m.ID)
			}
		}
		if len(ids) > 0 {
			if err := c.XAck(ctx, redisStream, redisGroup, ids...).Err(); err != nil {
				return fmt.Errorf("XACK: %w", err)
			}
		}
	}
}
