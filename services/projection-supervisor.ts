import { ORG_APP } from "../events/subjects.js";
import type { ProjectionDefinition, ProjectionScope } from "../projections/projection.js";
import type { EventStore } from "./event-store.js";
import { ProjectionRunner, type RunnerOptions } from "./projection-runner.js";

export { ORG_APP } from "../events/subjects.js";

/** The streams of a prefix: one per app, plus the org stream if it exists. */
export async function discoverScopes(store: EventStore): Promise<ProjectionScope[]> {
  const { names } = store;
  const appStreamPrefix = names.appStream("");
  const scopes: ProjectionScope[] = [];
  for await (const stream of store.jsm.streams.names()) {
    if (stream.startsWith(appStreamPrefix)) {
      scopes.push({ prefix: names.prefix, app: stream.slice(appStreamPrefix.length), stream });
    } else if (stream === names.orgStream()) {
      scopes.push({ prefix: names.prefix, app: ORG_APP, stream });
    }
  }
  return scopes.sort((a, b) => a.stream.localeCompare(b.stream));
}

export interface SupervisorOptions extends RunnerOptions {
  /** How often to look for streams of new apps. */
  discoverEveryMs?: number;
  /** Only these apps (and the org); default every app under the prefix. */
  apps?: string[];
}

/**
 * Runs every projection over every stream of the prefix, starting runners for apps that appear later.
 * One supervisor per prefix and read-model location: two runners writing the same target would race.
 */
export class ProjectionSupervisor {
  private readonly runners = new Map<string, ProjectionRunner>();
  private timer: NodeJS.Timeout | undefined;
  private discovering: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(
    readonly store: EventStore,
    readonly definitions: readonly ProjectionDefinition[],
    private readonly options: SupervisorOptions = {},
  ) {}

  async start(): Promise<void> {
    await this.discover();
    this.timer = setInterval(() => {
      this.discovering = this.discovering.then(() => this.discover()).catch((err) => this.options.onError?.(err, { projection: "*", stream: "*", seq: null }));
    }, this.options.discoverEveryMs ?? 2000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.discovering.catch(() => undefined);
    await Promise.allSettled([...this.runners.values()].map((r) => r.stop()));
    this.runners.clear();
  }

  list(): ProjectionRunner[] {
    return [...this.runners.values()];
  }

  runner(name: string, app: string): ProjectionRunner | undefined {
    return this.runners.get(`${name}\u0000${app}`);
  }

  /** Resolves when every runner of `app` has applied the stream up to `seq`. */
  async waitFor(app: string, seq: number, timeoutMs = 30_000): Promise<boolean> {
    const runners = this.list().filter((r) => r.scope.app === app);
    const results = await Promise.all(runners.map((r) => r.waitFor(seq, timeoutMs)));
    return runners.length > 0 && results.every(Boolean);
  }

  private async discover(): Promise<void> {
    if (this.stopped) return;
    const wanted = this.options.apps;
    for (const scope of await discoverScopes(this.store)) {
      if (wanted && scope.app !== ORG_APP && !wanted.includes(scope.app)) continue;
      for (const definition of this.definitions) {
        const key = `${definition.name}\u0000${scope.app}`;
        if (this.runners.has(key) || this.stopped) continue;
        const runner = new ProjectionRunner(this.store, definition, scope, this.options);
        this.runners.set(key, runner);
        try {
          await runner.start();
        } catch (err) {
          this.runners.delete(key);
          this.options.onError?.(err, { projection: definition.name, stream: scope.stream, seq: null });
        }
      }
    }
  }
}
