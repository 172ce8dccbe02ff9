// Submits the authorization response (response_mode=form_post) to the client.
document.getElementById("response").submit();
