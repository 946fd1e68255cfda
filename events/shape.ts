import type { z } from "zod";
import { LedgerEvent } from "../schemas/events.js";

/**
 * A structural check compiled from the event schemas: every field present with the right JSON type
 * (string, number, boolean, null, literal, enum member, array, object without unknown keys), and
 * nothing more: string lengths, regexes, datetime formats, integer and range refinements are not
 * re-checked. See `decodeEventStructural` (upcast.ts) for why that is enough on replay.
 *
 * Derived from the zod schemas themselves, so a field added to a schema is checked here without
 * anyone restating it. Anything the compiler does not know falls back to "accept", which keeps it
 * from ever refusing an event the strict parse accepts.
 */
export type ShapeCheck = (value: unknown) => boolean;

interface Def {
  type: string;
  innerType?: z.ZodType;
  element?: z.ZodType;
  shape?: Record<string, z.ZodType>;
  catchall?: z.ZodType;
  values?: unknown[];
  entries?: Record<string, unknown>;
  options?: z.ZodType[];
}

const defOf = (schema: z.ZodType): Def => (schema as unknown as { _zod: { def: Def } })._zod.def;
const accept: ShapeCheck = () => true;

export function compileShape(schema: z.ZodType): ShapeCheck {
  const def = defOf(schema);
  switch (def.type) {
    case "string":
      return (v) => typeof v === "string";
    case "number":
      return (v) => typeof v === "number";
    case "boolean":
      return (v) => typeof v === "boolean";
    case "null":
      return (v) => v === null;
    case "literal": {
      const values = new Set(def.values);
      return (v) => values.has(v);
    }
    case "enum": {
      const values = new Set(Object.values(def.entries ?? {}));
      return (v) => values.has(v);
    }
    case "nullable": {
      const inner = compileShape(def.innerType!);
      return (v) => v === null || inner(v);
    }
    case "optional": {
      const inner = compileShape(def.innerType!);
      return (v) => v === undefined || inner(v);
    }
    case "array": {
      const element = compileShape(def.element!);
      return (v) => {
        if (!Array.isArray(v)) return false;
        for (const item of v) if (!element(item)) return false;
        return true;
      };
    }
    case "union": {
      const options = (def.options ?? []).map(compileShape);
      return (v) => options.some((check) => check(v));
    }
    case "object": {
      const fields = Object.entries(def.shape ?? {}).map(([key, field]) => [key, compileShape(field)] as const);
      const known = new Set(fields.map(([key]) => key));
      // A strict object (catchall never) refuses unknown keys; a loose one lets them through.
      const strict = def.catchall !== undefined && defOf(def.catchall).type === "never";
      return (v) => {
        if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
        const record = v as Record<string, unknown>;
        for (const [key, check] of fields) if (!check(record[key])) return false;
        if (strict) for (const key in record) if (!known.has(key)) return false;
        return true;
      };
    }
    default:
      return accept;
  }
}

/** One compiled check per event type, for the shape written today (stored events are upcast first). */
export const EVENT_SHAPES: ReadonlyMap<string, ShapeCheck> = new Map(
  LedgerEvent.options.map((option) => [option.shape.type.value, compileShape(option)] as const),
);
