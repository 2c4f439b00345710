//! What may be shown of configured values that can carry credentials: a URL loses its user
//! info, query and fragment before it reaches a log line or a report.

/// `url` without user info, query or fragment, which may carry credentials.
pub fn display_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::display_url;

    #[test]
    fn urls_lose_their_user_info_and_query() {
        assert_eq!(display_url("https://u:p@h:1/x?t=1#f"), "https://h:1/x");
        assert_eq!(display_url("https://u@h/a/b@c"), "https://h/a/b@c");
        assert_eq!(display_url("http://h"), "http://h");
        assert_eq!(display_url("h"), "h");
    }
}
