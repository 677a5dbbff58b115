import { describe, expect, it } from "vitest";
import { escapeHtml, html, path, queryString, raw } from "./html.js";

describe("html templates", () => {
  it("escapes every interpolated string, in text and in attributes", () => {
    const hostile = `<script>alert("x")</script>&'`;
    const out = html`<p title="${hostile}">${hostile}</p>`.value;
    expect(out).toBe('<p title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;</p>');
    expect(out).not.toContain("<script>");
  });

  it("keeps nested markup, escapes lists item by item, and renders nothing for null, undefined and booleans", () => {
    const items = ["a<b", "c&d"];
    const out = html`<ul>${items.map((i) => html`<li>${i}</li>`)}</ul>${null}${undefined}${false}${true}${0}`.value;
    expect(out).toBe("<ul><li>a&lt;b</li><li>c&amp;d</li></ul>0");
  });

  it("passes raw markup through unchanged, and only that", () => {
    expect(html`${raw("<b>ok</b>")}${"<b>no</b>"}`.value).toBe("<b>ok</b>&lt;b&gt;no&lt;/b&gt;");
    expect(escapeHtml("plain text")).toBe("plain text");
  });

  it("builds paths and query strings with every part encoded", () => {
    expect(path("ui", "rollouts", "demo", "beta/1", "2.0")).toBe("/ui/rollouts/demo/beta%2F1/2.0");
    expect(queryString({ image: "demo", q: "a&b=c", empty: "", none: undefined, offset: 50 })).toBe("?image=demo&q=a%26b%3Dc&offset=50");
    expect(queryString({ none: undefined })).toBe("");
  });
});
