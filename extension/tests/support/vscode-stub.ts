/** A small stand-in for the `vscode` module in unit tests: the API the extension uses, with
 * every call recorded in `recorded` and every answer a user would give taken from `answers`. */

type Listener<T> = (value: T) => unknown;

export class Disposable {
  constructor(private readonly callback: () => void = () => undefined) {}
  dispose(): void {
    this.callback();
  }
}

export class EventEmitter<T> {
  private listeners = new Set<Listener<T>>();
  readonly event = (listener: Listener<T>): Disposable => {
    this.listeners.add(listener);
    return new Disposable(() => this.listeners.delete(listener));
  };
  fire(value: T): void {
    for (const listener of [...this.listeners]) listener(value);
  }
  dispose(): void {
    this.listeners.clear();
  }
}

export class ThemeColor {
  constructor(readonly id: string) {}
}

export class ThemeIcon {
  constructor(
    readonly id: string,
    readonly color?: ThemeColor,
  ) {}
}

export class MarkdownString {
  isTrusted?: boolean;
  supportHtml?: boolean;
  supportThemeIcons?: boolean;
  constructor(public value = '') {}
}

export enum TreeItemCollapsibleState {
  None = 0,
  Collapsed = 1,
  Expanded = 2,
}

export class TreeItem {
  id?: string;
  description?: string;
  tooltip?: string | MarkdownString;
  contextValue?: string;
  iconPath?: ThemeIcon;
  constructor(
    public label: string,
    public collapsibleState: TreeItemCollapsibleState = TreeItemCollapsibleState.None,
  ) {}
}

export enum StatusBarAlignment {
  Left = 1,
  Right = 2,
}

export enum ProgressLocation {
  SourceControl = 1,
  Window = 10,
  Notification = 15,
}

export enum QuickPickItemKind {
  Separator = -1,
  Default = 0,
}

export class Uri {
  private constructor(
    readonly scheme: string,
    readonly authority: string,
    readonly path: string,
  ) {}
  static parse(value: string): Uri {
    const match = /^([a-z][a-z0-9+.-]*):\/\/([^/]*)(.*)$/i.exec(value);
    if (!match) throw new Error(`not a URI: ${value}`);
    return new Uri(match[1] ?? '', match[2] ?? '', match[3] ?? '');
  }
  toString(): string {
    return `${this.scheme}://${this.authority}${this.path}`;
  }
}

export interface QuickPickCall {
  items: { label: string; description?: string; detail?: string; kind?: number }[];
  options: { title?: string; placeHolder?: string } | undefined;
}
export interface MessageCall {
  severity: 'information' | 'warning' | 'error';
  message: string;
  options: { modal?: boolean; detail?: string } | undefined;
  items: string[];
}
export interface ProgressCall {
  options: { location: ProgressLocation; title?: string };
  reports: { message?: string; increment?: number }[];
}
export interface TerminalCall {
  name?: string;
  shellPath?: string;
  shellArgs?: string[];
  shown: boolean;
}
export interface StatusBarItemStub {
  id: string;
  alignment: StatusBarAlignment;
  priority: number | undefined;
  name?: string;
  text: string;
  tooltip?: string | MarkdownString;
  backgroundColor?: ThemeColor;
  command?: { command: string; arguments?: unknown[]; title: string };
  visible: boolean;
  show(): void;
  hide(): void;
  dispose(): void;
}

export const recorded = {
  quickPicks: [] as QuickPickCall[],
  messages: [] as MessageCall[],
  inputBoxes: [] as { title?: string; prompt?: string; password?: boolean; value?: string }[],
  progress: [] as ProgressCall[],
  terminals: [] as TerminalCall[],
  executed: [] as { command: string; args: unknown[] }[],
  statusBarItems: [] as StatusBarItemStub[],
  opened: [] as string[],
};

/** What the "user" answers. A quick pick's answer picks an item by its label (undefined:
 * Escape); a message's answer is the label of a button; an input box's is its text. */
export const answers = {
  quickPick: [] as (string | undefined | ((items: QuickPickCall['items']) => number | undefined))[],
  message: [] as (string | undefined)[],
  inputBox: [] as (string | undefined)[],
};

const registered = new Map<string, (...args: unknown[]) => unknown>();
const installed = new Set<string>();

export function reset(): void {
  for (const list of Object.values(recorded)) list.length = 0;
  for (const list of Object.values(answers)) list.length = 0;
  registered.clear();
  installed.clear();
  env.remoteName = undefined;
  workspace.workspaceFolders = undefined;
}

export function installExtension(id: string): void {
  installed.add(id.toLowerCase());
}

/** Waits until pending promise callbacks (messages' `.then`) have run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
}

function take<T>(queue: T[], what: string): T {
  if (queue.length === 0) throw new Error(`the test gave no answer for ${what}`);
  return queue.shift() as T;
}

export const window = {
  async showQuickPick<T extends { label: string }>(
    items: T[] | Promise<T[]>,
    options?: QuickPickCall['options'],
  ): Promise<T | undefined> {
    const list = await items;
    recorded.quickPicks.push({ items: list, options });
    const answer = take(
      answers.quickPick,
      `the quick pick "${options?.title ?? options?.placeHolder}"`,
    );
    if (answer === undefined) return undefined;
    if (typeof answer === 'function') {
      const index = answer(list);
      return index === undefined ? undefined : list[index];
    }
    const found = list.find((item) => item.label === answer);
    if (found === undefined) {
      throw new Error(`no item "${answer}" in ${JSON.stringify(list.map((i) => i.label))}`);
    }
    return found;
  },
  showInformationMessage: (message: string, ...rest: unknown[]) =>
    showMessage('information', message, rest),
  showWarningMessage: (message: string, ...rest: unknown[]) =>
    showMessage('warning', message, rest),
  showErrorMessage: (message: string, ...rest: unknown[]) => showMessage('error', message, rest),
  async showInputBox(options: {
    title?: string;
    prompt?: string;
    password?: boolean;
    value?: string;
    validateInput?: (text: string) => string | undefined;
  }): Promise<string | undefined> {
    recorded.inputBoxes.push(options);
    const answer = take(answers.inputBox, `the input box "${options.title}"`);
    if (answer !== undefined && options.validateInput?.(answer) !== undefined) {
      throw new Error(`the input box refused "${answer}": ${options.validateInput(answer)}`);
    }
    return answer;
  },
  async withProgress<R>(
    options: ProgressCall['options'],
    task: (progress: {
      report(value: { message?: string; increment?: number }): void;
    }) => Promise<R>,
  ): Promise<R> {
    const call: ProgressCall = { options, reports: [] };
    recorded.progress.push(call);
    return task({ report: (value) => call.reports.push(value) });
  },
  createTerminal(options: { name?: string; shellPath?: string; shellArgs?: string[] }) {
    const call: TerminalCall = { ...options, shown: false };
    recorded.terminals.push(call);
    return {
      name: options.name,
      show: () => {
        call.shown = true;
      },
      dispose: () => undefined,
    };
  },
  createStatusBarItem(id: string, alignment: StatusBarAlignment, priority?: number) {
    const item: StatusBarItemStub = {
      id,
      alignment,
      priority,
      text: '',
      visible: false,
      show() {
        item.visible = true;
      },
      hide() {
        item.visible = false;
      },
      dispose() {
        item.visible = false;
      },
    };
    recorded.statusBarItems.push(item);
    return item;
  },
};

async function showMessage(
  severity: MessageCall['severity'],
  message: string,
  rest: unknown[],
): Promise<string | undefined> {
  const first = rest[0];
  const options =
    first !== null && typeof first === 'object' ? (first as MessageCall['options']) : undefined;
  const items = rest.filter((item): item is string => typeof item === 'string');
  recorded.messages.push({ severity, message, options, items });
  return answers.message.length > 0 ? answers.message.shift() : undefined;
}

export const commands = {
  registerCommand(id: string, handler: (...args: unknown[]) => unknown): Disposable {
    if (registered.has(id)) throw new Error(`command ${id} is already registered`);
    registered.set(id, handler);
    return new Disposable(() => registered.delete(id));
  },
  async executeCommand(command: string, ...args: unknown[]): Promise<unknown> {
    recorded.executed.push({ command, args });
    const handler = registered.get(command);
    return handler === undefined ? undefined : handler(...args);
  },
  registered(): string[] {
    return [...registered.keys()];
  },
};

export const extensions = {
  getExtension(id: string): { id: string } | undefined {
    return installed.has(id.toLowerCase()) ? { id } : undefined;
  },
};

export const env: {
  remoteName: string | undefined;
  openExternal(uri: Uri): Promise<boolean>;
} = {
  remoteName: undefined,
  async openExternal(uri: Uri): Promise<boolean> {
    recorded.opened.push(uri.toString());
    return true;
  },
};

export const workspace: {
  workspaceFolders: { uri: Uri }[] | undefined;
  isTrusted: boolean;
} = { workspaceFolders: undefined, isTrusted: true };
