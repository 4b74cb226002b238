/**
 * A push-driven async iterable used as the request side of client streams:
 * callers push messages without waiting, Connect pulls them as the HTTP/2
 * stream takes them. Neighbouring messages that `merge` can join are joined
 * at pull time, so acks that piled up behind a busy stream share one message
 * while a lone ack goes at once.
 *
 * @internal
 * @module
 */
export class RequestQueue<T> implements AsyncIterable<T> {
  private items: T[] = [];
  private head = 0;
  private waiter: ((result: IteratorResult<T>) => void) | undefined;
  private ended = false;

  /** `merge(a, b)` returns the joined message, or undefined when they cannot be joined. */
  constructor(private readonly merge?: (a: T, b: T) => T | undefined) {}

  /** Queues `item`; false once the queue is closed (the item is dropped). */
  push(item: T): boolean {
    if (this.ended) {
      return false;
    }
    const waiter = this.waiter;
    if (waiter !== undefined) {
      this.waiter = undefined;
      waiter({ value: item, done: false });
    } else {
      this.items.push(item);
    }
    return true;
  }

  /** Ends the stream after the queued items (a half-close). */
  close(): void {
    this.ended = true;
    if (this.head >= this.items.length && this.waiter !== undefined) {
      const waiter = this.waiter;
      this.waiter = undefined;
      waiter({ value: undefined, done: true });
    }
  }

  get closed(): boolean {
    return this.ended;
  }

  private take(): T | undefined {
    if (this.head >= this.items.length) {
      return undefined;
    }
    let first = this.items[this.head++] as T;
    if (this.merge !== undefined) {
      while (this.head < this.items.length) {
        const joined = this.merge(first, this.items[this.head] as T);
        if (joined === undefined) {
          break;
        }
        first = joined;
        this.head++;
      }
    }
    if (this.head >= this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head > 1024) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return first;
  }

  /** The next item, or done once closed and drained. */
  private next(): Promise<IteratorResult<T>> | IteratorResult<T> {
    const item = this.take();
    if (item !== undefined) {
      return { value: item, done: false };
    }
    if (this.ended) {
      return { value: undefined, done: true };
    }
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  /** An async generator (so the consumer of the stream can `return` or `throw` into it, which closes the queue). */
  async *[Symbol.asyncIterator](): AsyncGenerator<T, void, undefined> {
    try {
      for (;;) {
        const result = await this.next();
        if (result.done === true) {
          return;
        }
        yield result.value;
      }
    } finally {
      this.ended = true;
      this.items = [];
      this.head = 0;
    }
  }
}
