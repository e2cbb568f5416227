//! `optouts list|add|remove`: numbers that must not be texted.

use nhsmail_agent::proto::{AddOptOutRequest, ListOptOutsRequest, ListOptOutsResponse, OptOut, RemoveOptOutRequest};
use serde_json::json;

use crate::cli::{OptoutChangeArgs, OptoutsListArgs, OutputFormat};
use crate::connect::Agent;
use crate::convert::{list_opt_outs_json, opt_out_json};
use crate::output::{self, Details, Table, local_time, or_dash};

pub async fn list(agent: &Agent, format: OutputFormat, args: OptoutsListArgs) -> anyhow::Result<()> {
    let request = agent.request(ListOptOutsRequest {
        page_size: args.limit.unwrap_or(0),
        page_token: args.page_token.unwrap_or_default(),
    });
    let response = agent.call(agent.opt_out_service().list_opt_outs(request)).await?;

    output::print_result(format, || list_opt_outs_json(&response), || render_list(&response));
    super::print_status_warnings(agent).await;
    Ok(())
}

pub async fn add(agent: &Agent, format: OutputFormat, args: OptoutChangeArgs) -> anyhow::Result<()> {
    let request = agent.request(AddOptOutRequest { number: args.number, note: args.note });
    let opt_out = agent.call(agent.opt_out_service().add_opt_out(request)).await?;

    output::print_result(format, || opt_out_json(&opt_out), || render_one(&opt_out));
    super::print_status_warnings(agent).await;
    Ok(())
}

pub async fn remove(agent: &Agent, format: OutputFormat, args: OptoutChangeArgs) -> anyhow::Result<()> {
    let number = args.number.clone();
    let request = agent.request(RemoveOptOutRequest { number: args.number, note: args.note });
    let response = agent.call(agent.opt_out_service().remove_opt_out(request)).await?;

    let text = if response.removed {
        format!("{number} is opted back in and can be texted again.\n")
    } else {
        format!("{number} was not opted out; nothing changed.\n")
    };
    output::print_result(format, || json!({ "removed": response.removed }), || text);
    super::print_status_warnings(agent).await;
    Ok(())
}

fn render_one(opt_out: &OptOut) -> String {
    Details::new()
        .row("Number", &opt_out.number)
        .row("Opted out", local_time(opt_out.opted_out_at.as_ref(), "-"))
        .row("Source", &opt_out.source)
        .row("Note", or_dash(&opt_out.note))
        .render()
}

fn render_list(response: &ListOptOutsResponse) -> String {
    let mut table = Table::new(vec!["OPTED OUT", "NUMBER", "SOURCE", "NOTE"]);
    for opt_out in &response.opt_outs {
        table.row(vec![
            local_time(opt_out.opted_out_at.as_ref(), "-"),
            opt_out.number.clone(),
            opt_out.source.clone(),
            or_dash(&opt_out.note),
        ]);
    }

    let mut text = if table.is_empty() { "No numbers are opted out.\n".to_string() } else { table.render() };
    if !response.next_page_token.is_empty() {
        text.push_str(&format!("\nMore opt-outs: add --page-token {}\n", response.next_page_token));
    }
    text
}
