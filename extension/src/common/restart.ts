/** Serialised restarts: one in flight, at most one queued behind it (ruff-vscode's
 * `requestRestart`). A request made while one runs is served by the next run, since the
 * running one may have read the settings before the change that caused the request. */
export class RestartQueue {
  private running: Promise<void> | undefined;
  private queued: Promise<void> | undefined;

  constructor(private readonly run: () => Promise<void>) {}

  /** Resolves when a restart that began after this call has finished. */
  request(): Promise<void> {
    if (this.queued !== undefined) return this.queued;
    if (this.running !== undefined) {
      const ahead = this.running;
      const next = ahead
        .then(
          () => undefined,
          () => undefined,
        )
        .then(() => {
          this.queued = undefined;
          return this.launch();
        });
      this.queued = next;
      return next;
    }
    return this.launch();
  }

  get busy(): boolean {
    return this.running !== undefined;
  }

  /** Resolves once no restart is running or queued (whatever their outcome). */
  async idle(): Promise<void> {
    for (;;) {
      const pending = this.queued ?? this.running;
      if (pending === undefined) return;
      await pending.catch(() => undefined);
    }
  }

  private launch(): Promise<void> {
    const run: Promise<void> = this.run().finally(() => {
      if (this.running === run) this.running = undefined;
    });
    this.running = run;
    return run;
  }
}

/** How often a daemon that exits on its own is started again: up to `limit` times in a sliding
 * window of `windowMs`. One more exit in the window means it would only crash again (a broken
 * install, a bad setting): it stays down, and says so, until the user restarts it. */
export class CrashBudget {
  private exits: number[] = [];

  constructor(
    readonly limit: number,
    readonly windowMs: number,
    private readonly now: () => number,
  ) {}

  /** Counts an exit; true when a restart is still allowed. */
  spend(): boolean {
    const now = this.now();
    this.exits = this.exits.filter((at) => now - at < this.windowMs);
    this.exits.push(now);
    return this.exits.length <= this.limit;
  }

  /** Exits in the window so far. */
  get spent(): number {
    return this.exits.length;
  }

  reset(): void {
    this.exits = [];
  }
}
