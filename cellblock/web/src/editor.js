// The CodeMirror 6 editor: one EditorView whose language and theme sit in compartments, swapped in place.
//
// Grammars are loaded on demand with import() (one chunk each), so the first page load carries only the core.
import { EditorView, basicSetup } from "codemirror";
import { Compartment, Prec } from "@codemirror/state";
import { keymap } from "@codemirror/view";
import { StreamLanguage } from "@codemirror/language";
import { indentWithTab } from "@codemirror/commands";

const legacy = (load) => async () => StreamLanguage.define(await load());

// Cellblock language name -> a loader of its CodeMirror extension; a language without one is plain text.
const GRAMMARS = {
  python3: async () => (await import("@codemirror/lang-python")).python(),
  c: async () => (await import("@codemirror/lang-cpp")).cpp(),
  cpp: async () => (await import("@codemirror/lang-cpp")).cpp(),
  java: async () => (await import("@codemirror/lang-java")).java(),
  javascript: async () => (await import("@codemirror/lang-javascript")).javascript(),
  typescript: async () => (await import("@codemirror/lang-javascript")).javascript({ typescript: true }),
  go: async () => (await import("@codemirror/lang-go")).go(),
  rust: async () => (await import("@codemirror/lang-rust")).rust(),
  php: async () => (await import("@codemirror/lang-php")).php(),
  ruby: legacy(async () => (await import("@codemirror/legacy-modes/mode/ruby")).ruby),
  perl: legacy(async () => (await import("@codemirror/legacy-modes/mode/perl")).perl),
  bash: legacy(async () => (await import("@codemirror/legacy-modes/mode/shell")).shell),
  multifile: legacy(async () => (await import("@codemirror/legacy-modes/mode/shell")).shell),
};

export function hasGrammar(name) {
  return name in GRAMMARS;
}

export class Editor {
  constructor(parent, onRun) {
    this.language = new Compartment();
    this.theme = new Compartment();
    this.current = "";
    this.view = new EditorView({
      parent,
      doc: "",
      extensions: [
        basicSetup,
        keymap.of([indentWithTab]),
        // Ctrl-Enter (Cmd-Enter on a Mac) runs; above basicSetup's keymap, which would insert a line.
        Prec.highest(keymap.of([{ key: "Mod-Enter", run: () => (onRun(), true) }])),
        this.language.of([]),
        this.theme.of([]),
        EditorView.contentAttributes.of({ "aria-label": "Source code" }),
      ],
    });
  }

  get text() {
    return this.view.state.doc.toString();
  }

  set text(value) {
    this.view.dispatch({ changes: { from: 0, to: this.view.state.doc.length, insert: value } });
  }

  async setLanguage(name) {
    this.current = name;
    const load = GRAMMARS[name];
    let ext = [];
    if (load) {
      try {
        ext = await load();
      } catch {
        ext = []; // a chunk that failed to load: plain text is still an editor
      }
    }
    if (this.current === name) this.view.dispatch({ effects: this.language.reconfigure(ext) });
    this.view.dom.dataset.language = name;
  }

  async setDark(dark) {
    const ext = dark ? (await import("@codemirror/theme-one-dark")).oneDark : [];
    this.view.dispatch({ effects: this.theme.reconfigure(ext) });
  }
}
